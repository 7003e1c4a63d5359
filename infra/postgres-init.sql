-- one database per server, owned by the compose file's user
CREATE DATABASE mlflow OWNER alignpipe;
CREATE DATABASE prefect OWNER alignpipe;
