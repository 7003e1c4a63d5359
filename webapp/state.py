"""What the app holds while it runs: settings, the database, the generation queue, rate limits."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from components.app.database import Location
from components.app.generation import GenerationQueue
from components.app.limits import RateLimiter
from components.params import Params
from components.policy.policies import Policies

LOGIN_ATTEMPTS = 10           # per account name ...
LOGIN_WINDOW_S = 300.0        # ... in this many seconds


@dataclass(frozen=True)
class AppConfig:
    """Everything ``create_app`` needs; ``flows/app_commands.py`` builds it from the project."""

    params: Params
    policies: Policies
    database: Location
    dataset_dir: Path             # the project's artifacts/dataset: its newest data version
    secret_file: Path             # the session-signing secret (0600, outside the repository)
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class AppState:
    config: AppConfig
    sessions: sessionmaker[Session]       # transactions that may write
    reading: sessionmaker[Session]        # transactions that only read (pages: they never wait for writers)
    queue: GenerationQueue
    flags: RateLimiter = field(init=False)
    chats: RateLimiter = field(init=False)
    logins: RateLimiter = field(default_factory=lambda: RateLimiter(LOGIN_ATTEMPTS, LOGIN_WINDOW_S))

    def __post_init__(self) -> None:
        self.flags = RateLimiter(self.config.params.app.flags_per_minute)
        self.chats = RateLimiter(self.config.params.app.chats_per_minute)
        # SQLite has one writer at a time: this process's writers queue here and wake at once,
        # instead of sleeping in SQLite's busy handler (which backs off up to 100 ms a try)
        self._write_lock = threading.Lock() if self.config.database.kind == "sqlite" else contextlib.nullcontext()

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction that may write, committed when the block ends."""
        with self._write_lock, self.sessions.begin() as db:
            yield db


def app_state(request: Request) -> AppState:
    return request.app.state.alignpipe
