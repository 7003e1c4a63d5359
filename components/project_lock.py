"""One retrain at a time per project: an advisory lock on ``.dvc/tmp/alignpipe-run.lock``.

Two runs of one project would fight over DVC's outputs and the champion; DVC's own lock
only makes the second fail half-way. ``flock`` is released by the kernel when its holder
dies, even by ``kill -9``, so a crash never leaves a stale lock; the file's text names the
holder for whoever waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from components.errors import UserError

LOCK_FILE = Path(".dvc") / "tmp" / "alignpipe-run.lock"


class ProjectBusy(UserError):
    """Another run holds the project's lock (and ``--wait`` ran out, or was not given)."""


def holder(root: Path) -> str:
    """Who holds (or last held) the lock, as its holder wrote it."""
    path = root / LOCK_FILE
    return path.read_text().strip() if path.exists() else "unknown"


@contextlib.contextmanager
def project_lock(root: Path, wait_s: float, what: str, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the project's lock for the block; wait up to ``wait_s`` seconds for it, saying
    once who holds it, then raise :class:`ProjectBusy` naming the holder."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        deadline = time.monotonic() + wait_s
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ProjectBusy(f"another run holds the project lock ({path}): {holder(root)}; "
                                      f"wait for it with --wait SECONDS") from None
                if not announced:
                    say(f"waiting up to {wait_s:g} s for the project lock, held by {holder(root)}")
                    announced = True
                time.sleep(1)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} (user {getpass.getuser()}), {what}, since {started}\n")
        handle.flush()
        yield
    finally:
        handle.close()   # releases the lock
