"""Where the feedback database lives, and opening it at the newest schema.

One code path, two databases: SQLite (WAL, a busy timeout, write transactions taken at once so
two writers wait for each other instead of failing, reads beside them) in the project's state folder by
default, and a database of its own on the team's PostgreSQL while ``alignpipe services up``
runs. ``$ALIGNPIPE_APP_DATABASE`` names any other SQLAlchemy URL. The PostgreSQL password
stays in the services' ``pgpass`` (libpq reads it): no URL here holds a credential.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from components.environment import state_dir

URL_VARIABLE = "ALIGNPIPE_APP_DATABASE"
POSTGRES_DATABASE = "alignpipe_app"
SQLITE_BUSY_MS = 30_000
MIGRATIONS = Path(__file__).with_name("migrations")
READ_ONLY = "alignpipe_read_only"   # an execution option: the transaction only reads
# the web server runs up to 40 requests at once (its thread pool) beside the generation thread;
# SQLAlchemy's default pool (5 + 10 connections) makes the rest wait, and fail after 30 s
POOL = {"pool_size": 10, "max_overflow": 40}


@dataclass(frozen=True)
class Location:
    """A database URL (never with a password) and what the driver needs to connect."""

    url: str
    connect_args: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        return "postgresql" if self.url.startswith("postgresql") else "sqlite" if self.url.startswith("sqlite") else "other"

    def describe(self) -> str:
        return self.url.split("?", 1)[0]


def default_location() -> Location:
    """``$ALIGNPIPE_APP_DATABASE``; else the services' PostgreSQL when it runs; else SQLite
    under the state folder."""
    if os.environ.get(URL_VARIABLE):
        return Location(os.environ[URL_VARIABLE])
    from components.services.stack import Stack

    cluster = Stack.here().cluster
    if cluster.running():
        url = cluster.ensure_database(POSTGRES_DATABASE).replace("postgresql://", "postgresql+psycopg2://", 1)
        return Location(url, (("passfile", str(cluster.pgpass)),))
    return sqlite_location(state_dir() / "app" / "feedback.db")


def sqlite_location(path: Path) -> Location:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Location(f"sqlite:///{path.resolve()}")


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000}, **POOL)

    @event.listens_for(engine, "connect")
    def _pragmas(connection, _record) -> None:
        connection.isolation_level = None   # SQLAlchemy's "begin" below starts every transaction
        cursor = connection.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={SQLITE_BUSY_MS}", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        # a transaction that may write takes the write lock at its start, so that a read followed
        # by a write cannot fail on the lock's upgrade; a read-only one shares the database
        reading = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


_engines: dict[Location, Engine] = {}
_lock = threading.Lock()


def engine_for(location: Location) -> Engine:
    """One engine per location in this process, migrated to the newest schema when first opened."""
    with _lock:
        if location not in _engines:
            engine = (_sqlite_engine(location.url) if location.kind == "sqlite" else
                      create_engine(location.url, connect_args=dict(location.connect_args), pool_pre_ping=True, **POOL))
            migrate(engine)
            _engines[location] = engine
        return _engines[location]


def migrate(engine: Engine) -> None:
    """Alembic ``upgrade head`` on ``engine`` (a no-op when it is up to date)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def sessions(location: Location | None = None, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on ``location`` (default: :func:`default_location`); objects stay readable after
    commit. ``read_only`` sessions never write, so on SQLite they do not wait for writers."""
    engine = engine_for(location or default_location())
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}) if read_only else engine, expire_on_commit=False)
