"""Every command that talks to the tracking server, run as a user runs it, against a server
that is not there or refuses: one line naming the server with its password masked, exit
status 2, no traceback; and a bug's traceback, when there is one, shows no password either.

The servers are real: a port nothing listens on, and a small HTTP server in this process.
MLflow is told not to retry (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, a user setting), so that
each command fails in seconds instead of after its half a minute of backoff.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.redact import mask_credentials, mask_log_records
from components.registry.tracking import server_problem
from conftest import REPO_ROOT, write_params
from e2e_project import BIN

PASSWORD = "s3cret-pw"
HH_PAIR = {"chosen": "Human: Hi\n\nAssistant: Hello, how can I help?",
           "rejected": "Human: Hi\n\nAssistant: Go away, idiot."}
FAST_COMMANDS = [
    ["rollback"],
    ["promote", "1"],
    ["status"],
    ["adapter", "list"],
    ["adapter", "promote", "kids-tutor", "1"],
    ["adapter", "rollback", "kids-tutor"],
    ["evaluate", "--model", "models:/alignpipe-policy@champion", "--pairs", "pairs.jsonl"],
]
FLOW_COMMANDS = [["run"], ["personalize"], ["simulate"]]   # each talks to a Prefect server first: the session's


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def project(tmp_path):
    """A folder with params (policies and withdrawals by absolute path) and a pairs file."""
    write_params(tmp_path, {"data.withdrawals": str(REPO_ROOT / "data" / "withdrawals.txt"), "validation.min_rows": 2})
    (tmp_path / "pairs.jsonl").write_text(json.dumps(HH_PAIR) + "\n")
    return tmp_path


def alignpipe(project, uri: str, *args: str, prefect: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"} | ({"PREFECT_API_URL": prefect} if prefect else {})
    return subprocess.run([str(BIN / "alignpipe"), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)


def error_lines(done: subprocess.CompletedProcess, command: str) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith(f"alignpipe {command}: error: ")]


class Refusing(BaseHTTPRequestHandler):
    """``/health`` answers 200 to the right credentials (basic auth), 401 to others; the API
    answers ``self.server.api_status``. With ``health_status`` set, everything answers that."""

    def _answer(self) -> None:
        expected = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
        if self.server.health_status:
            status, body = self.server.health_status, b"no"
        elif self.path.startswith("/health"):
            status, body = (200, b"OK") if self.headers.get("Authorization") == expected else (401, b"who?")
        else:
            status = self.server.api_status
            body = json.dumps({"error_code": "PERMISSION_DENIED", "message": "no"}).encode() if status == 403 else b"boom"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing():
    """``start(health_status=None, api_status=403)`` -> the URI of a running server, password included."""
    servers = []

    def start(health_status: int | None = None, api_status: int = 403) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
        server.health_status, server.api_status = health_status, api_status
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://user:{PASSWORD}@127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", FAST_COMMANDS + [pytest.param(c, marks=pytest.mark.slow) for c in FLOW_COMMANDS],
                         ids=" ".join)
def test_a_dead_server_is_one_line_naming_it_masked(project, command, request):
    port = free_port()   # closed again: nothing listens there
    prefect = request.getfixturevalue("prefect_api_url") if command in FLOW_COMMANDS else None
    done = alignpipe(project, f"http://user:{PASSWORD}@127.0.0.1:{port}", *command, prefect=prefect)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert PASSWORD not in output and "Traceback" not in output, output[-3000:]
    expected = (f"alignpipe {command[0]}: error: ", f"the MLflow tracking server at http://user:***@127.0.0.1:{port} "
                "does not answer (connection refused)")
    (line,) = error_lines(done, command[0])
    assert line.startswith(expected[0]) and expected[1] in line, output[-3000:]
    if command not in FLOW_COMMANDS:   # a flow's run also logs its start and end through Prefect
        assert done.stderr.splitlines() == [line], done.stderr


@pytest.mark.parametrize(("health_status", "api_status", "says"), [
    (401, None, "refuses the request (HTTP 401 Unauthorized)"),
    (503, None, "answers HTTP 503 Service Unavailable"),
    (None, 403, "refuses the request (PERMISSION_DENIED): check the credentials"),   # /health fine, the API not
])
def test_a_refusing_server_is_one_line_naming_it_masked(project, refusing, health_status, api_status, says):
    uri = refusing(health_status, api_status)
    done = alignpipe(project, uri, "rollback")
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"alignpipe rollback: error: the MLflow tracking server at {mask_credentials(uri)} {says}"), line
    assert PASSWORD not in done.stdout + done.stderr


def test_a_bug_keeps_its_traceback_without_the_password(project, refusing):
    """A server whose API fails (HTTP 500) while /health answers: not a user's problem to fix,
    so the traceback stays, with the URI MLflow puts in its message masked."""
    uri = refusing(api_status=500)
    done = alignpipe(project, uri, "rollback")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" in done.stderr and f"{mask_credentials(uri)}/api/" in done.stderr, done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr


def test_the_health_check_sends_the_uri_credentials_as_basic_auth(refusing):
    """urllib alone would take ``user:password@127.0.0.1`` for a host name and call a live
    server dead, turning every bug into "does not answer"."""
    uri = refusing(api_status=403)
    assert server_problem(uri) is None
    assert "HTTP 401" in str(server_problem(uri.replace(PASSWORD, "wrong")))
    assert server_problem("sqlite:////tmp/mlflow.db") is None


def test_log_records_are_masked_tracebacks_included():
    mask_log_records()
    stream = io.StringIO()
    logger = logging.getLogger("alignpipe-test-masking")
    logger.addHandler(logging.StreamHandler(stream))
    logger.propagate = False
    try:
        raise RuntimeError(f"API request to http://user:{PASSWORD}@host:5000/api failed")
    except RuntimeError:
        logger.exception("tracking at %s failed", f"https://me:{PASSWORD}@host")
    logged = stream.getvalue()
    assert "tracking at https://me:***@host failed" in logged and "http://user:***@host:5000/api" in logged
    assert "Traceback" in logged and PASSWORD not in logged
