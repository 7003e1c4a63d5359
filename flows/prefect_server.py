"""A Prefect server a person can open, for ``alignpipe serve``.

Without ``$PREFECT_API_URL``, Prefect runs each flow against a temporary in-process server
with no UI; scheduled runs then leave nothing to look at while they happen. ``serve`` uses
the server named by ``$PREFECT_API_URL``, else one already answering on the local port, else
starts one there (state under ``$PREFECT_HOME``, the project's state folder) and stops it on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from components.services.processes import answers

LOCAL_PORT = 4200
START_TIMEOUT_S = 90


@contextlib.contextmanager
def visible_server(port: int = LOCAL_PORT):
    """Yield the UI address of the server that runs will report to. Call before importing
    Prefect: it reads ``$PREFECT_API_URL`` once, at import."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"].removesuffix("/api")
        return
    url = f"http://127.0.0.1:{port}"
    os.environ["PREFECT_API_URL"] = f"{url}/api"
    if answers(f"{url}/api/health"):
        yield url
        return
    # a plain `kill` (SIGTERM) must stop the server too, not only Ctrl-C: exit through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    log = Path(os.environ["PREFECT_HOME"]) / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    with open(log, "ab") as output:
        server = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(f"{url}/api/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start on {url}; its log: {log}")
            time.sleep(1)
        print(f"started a Prefect server on {url} (log: {log}); it stops with this command", flush=True)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
