"""Long-running server processes started in the background: a pid file, a log, a health URL.

Each process gets its own session (``start_new_session``), so stopping it stops what it
started too (MLflow's uvicorn workers, the Prefect worker's flow runs), and it outlives the
``alignpipe services up`` that started it.
"""

from __future__ import annotations

import base64
import http.client
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from components.services.postgres import ServiceError

START_TIMEOUT_S = 180


def probe(url: str, timeout: float = 2) -> str | None:
    """None when ``url`` answers HTTP 200 within ``timeout`` seconds; otherwise what it did
    instead, in a few words ("does not answer (connection refused)", "answers HTTP 503 Service
    Unavailable"). A ``user:password@`` in the URL is sent as basic authentication, as MLflow
    sends it (urllib would take it for part of the host name)."""
    parts = urllib.parse.urlsplit(url)
    credentials, _, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)))
    if credentials:
        user, _, password = credentials.partition(":")
        token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return None if response.status == 200 else f"answers HTTP {response.status} {response.reason}"
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return f"refuses the request (HTTP {err.code} {err.reason})"
        return f"answers HTTP {err.code} {err.reason}"
    except TimeoutError:
        return f"does not answer within {timeout:g} s"
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            return f"does not answer within {timeout:g} s"
        reason = err.reason.strerror if isinstance(err.reason, OSError) and err.reason.strerror else err.reason
        return f"does not answer ({str(reason).lower()})"
    except (OSError, ValueError, http.client.HTTPException) as err:   # a reset connection, a port not a number
        return f"does not answer ({err})"


def answers(url: str) -> bool:
    """True when ``url`` answers HTTP 200 within two seconds."""
    return probe(url) is None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health: str | None           # a URL answering 200 once it serves; None: alive is enough
    folder: Path                 # where its pid file and log live

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.folder / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text().strip() or 0)
        return pid if pid and alive(pid) else None

    def healthy(self) -> bool:
        return self.pid() is not None and (self.health is None or answers(self.health))

    def start(self, environment: dict[str, str]) -> bool:
        """Start it unless it already runs; wait until it is healthy. True if started now."""
        if self.pid() is not None:
            return False
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as output:
            process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=environment, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.healthy():
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not start (exit {process.poll()}); the end of its log "
                                   f"{self.log}:\n{tail(self.log)}")
            time.sleep(0.5)
        return True

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM to its process group, SIGKILL after ``timeout_s``. True if it was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
        _reap(pid)
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status when we are the parent, so that the pid is really gone."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tail(log: Path, lines: int = 20) -> str:
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
