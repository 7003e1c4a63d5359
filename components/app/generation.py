"""One generation at a time: a queue, a worker thread, and answers streamed token by token.

Each chat turn becomes a :class:`Job`; the worker takes them in order, resolves and loads the
model that answers the person (``serving.py``), and generates with a ``TextIteratorStreamer``
the web layer reads from. A job whose reader left (``cancelled``) is skipped while it waits
and stopped at the next token while it runs. One unfinished job per person.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from components.app.text_rules import without_control

HH_NEXT_TURN = "\n\nHuman:"   # a transcript model (no chat template) would go on to write the user's turn
KEPT_FINISHED = 256


class Busy(RuntimeError):
    """The person already has an answer on its way."""


@dataclass(eq=False)
class Job:
    message_id: int
    account_id: int
    chat: list[dict[str, str]]
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    streamer: object = None       # the TextIteratorStreamer, once the model is loaded
    served: object = None         # serving.Served, once resolved
    text: str = ""                # the answer as stored
    status: str = "queued"
    error: str = ""


class GenerationQueue:
    """Jobs in order, run by one thread with ``run(job)``; ``position`` is 0 for the running one."""

    def __init__(self, run: Callable[[Job], None]):
        self._run, self._lock = run, threading.Lock()
        self._pending: queue.Queue[Job] = queue.Queue()
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._jobs: dict[int, Job] = {}
        threading.Thread(target=self._work, name="alignpipe-generation", daemon=True).start()

    def unfinished(self, account_id: int) -> bool:
        """Whether the person has an answer waiting or being written."""
        with self._lock:
            return self._unfinished(account_id)

    def _unfinished(self, account_id: int) -> bool:
        return any(j.account_id == account_id and not j.finished.is_set() for j in self._jobs.values())

    def submit(self, job: Job) -> Job:
        with self._lock:
            if self._unfinished(job.account_id):
                raise Busy("an answer to you is still on its way")
            finished = [key for key, j in self._jobs.items() if j.finished.is_set()]
            for key in finished[: max(0, len(finished) - KEPT_FINISHED)]:
                del self._jobs[key]
            self._jobs[job.message_id] = job
            self._waiting.append(job)
        self._pending.put(job)
        return job

    def job(self, message_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(message_id)

    def position(self, job: Job) -> int:
        """Answers ahead of ``job``: 0 while it runs (or is done)."""
        with self._lock:
            if job in self._waiting:
                return self._waiting.index(job) + (1 if self._running is not None else 0)
            return 0

    def depth(self) -> int:
        with self._lock:
            return len(self._waiting) + (self._running is not None)

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            with self._lock:
                self._waiting.remove(job)
                self._running = job
            try:
                if job.cancelled.is_set():
                    job.status = "stopped"
                else:
                    self._run(job)
            except Exception:  # one failed answer never stops the worker
                logging.getLogger("alignpipe.app").exception("answer to message %s failed", job.message_id)
                job.status, job.error = "failed", "the model failed to answer (the app's log says why)"
            finally:
                with self._lock:
                    self._running = None
                job.started.set()
                job.finished.set()
                if job.streamer is not None:
                    job.streamer.end()


def answer_text(text: str, transcript: bool) -> str:
    """The answer as stored and shown: for a transcript model, cut where it starts the user's
    next turn; without control characters (text_rules.without_control)."""
    return without_control(text.split(HH_NEXT_TURN, 1)[0] if transcript else text).strip()
