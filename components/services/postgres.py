"""A throwaway PostgreSQL cluster on loopback, the backend store of the team's servers.

The server binaries ship with PostgreSQL (``/usr/lib/postgresql/<N>/bin``, or
``$ALIGNPIPE_PG_BIN``); ``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run
as the ``postgres`` user, on a data folder handed to it. Unix sockets are off: everything
talks TCP on 127.0.0.1 with passwords (SCRAM). Passwords live in one ``pgpass`` file (mode
0600) that libpq (MLflow's psycopg2) and asyncpg (Prefect) read through ``$PGPASSFILE``, so
no URI, command line or log ever holds one.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from components.errors import UserError

SUPERUSER = "alignpipe_admin"
HOST = "127.0.0.1"


class ServiceError(UserError, RuntimeError):
    """A shared service cannot be started or reached; the message says which and its log."""


def server_binaries() -> Path:
    """The folder holding ``initdb``/``pg_ctl``: ``$ALIGNPIPE_PG_BIN``, else the newest installed."""
    named = os.environ.get("ALIGNPIPE_PG_BIN")
    found = [named] if named else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    raise ServiceError("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin; install "
                       "PostgreSQL or set ALIGNPIPE_PG_BIN to the folder holding them")


@dataclass(frozen=True)
class Cluster:
    """One cluster under ``folder`` (``data/`` and ``server.log``), answering on ``port``."""

    folder: Path
    port: int
    pgpass: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def _run(self, *command: str | Path) -> subprocess.CompletedProcess:
        """A server command as the cluster's owner: ``postgres`` when we are root."""
        as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        binary = server_binaries() / str(command[0])
        return subprocess.run([str(binary), *map(str, command[1:])], capture_output=True, text=True,
                              cwd="/", **as_postgres)

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        """``initdb`` with a random superuser password (kept in pgpass only), loopback TCP only."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder)
        self._reachable_by_owner()
        password = secrets.token_urlsafe(24)
        password_file = self.folder / ".initdb-password"
        password_file.write_text(password + "\n")
        self._own(password_file)
        try:
            result = self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--pwfile", password_file,
                               "--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8", "--no-instructions")
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceError(f"initdb failed in {self.data}: {result.stderr.strip()[-2000:]}")
        self.remember_password(SUPERUSER, password)

    def _reachable_by_owner(self) -> None:
        """As root, the ``postgres`` user must be able to walk into the folder; say so plainly."""
        if os.geteuid() != 0:
            return
        probe = subprocess.run(["test", "-w", str(self.folder)], user="postgres")
        if probe.returncode != 0:
            raise ServiceError(f"{self.folder}: the 'postgres' user cannot reach this folder (a parent folder is "
                               "private, such as mode 0700); put the state folder (ALIGNPIPE_HOME) somewhere it can")

    def start(self) -> None:
        if self.running():
            return
        options = f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories=''"
        result = self._run("pg_ctl", "start", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options)
        if result.returncode != 0:
            raise ServiceError(f"PostgreSQL did not start on {HOST}:{self.port}: {result.stderr.strip()[-500:]} "
                               f"(its log: {self.log})")

    def running(self) -> bool:
        return self.initialised() and self._run("pg_ctl", "status", "-D", self.data).returncode == 0

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w")

    def remember_password(self, user: str, password: str) -> None:
        """Add ``user``'s password to the pgpass file (replacing an older one), mode 0600."""
        lines = [line for line in (self.pgpass.read_text().splitlines() if self.pgpass.exists() else [])
                 if line.split(":")[3:4] != [user]]
        self.pgpass.touch(mode=0o600)
        self.pgpass.chmod(0o600)
        self.pgpass.write_text("\n".join([*lines, f"{HOST}:{self.port}:*:{user}:{password}"]) + "\n")

    def ensure_database(self, name: str) -> str:
        """Role and database ``name`` (the role owns it), created once; returns a URI without
        a password (libpq and asyncpg find it in pgpass)."""
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(host=HOST, port=self.port, user=SUPERUSER, dbname="postgres",
                                      passfile=str(self.pgpass))
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                if cursor.fetchone() is None:
                    password = secrets.token_urlsafe(24)
                    cursor.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(name), sql.Literal(password)))
                    self.remember_password(name, password)
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(name)))
        finally:
            connection.close()
        return f"postgresql://{name}@{HOST}:{self.port}/{name}"
