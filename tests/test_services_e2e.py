"""The team's shape, for real, on loopback: ``alignpipe services up`` starts PostgreSQL, an
MLflow server and a Prefect server on it and a process worker; ``retrain`` runs through the
worker against them and its champion loads from the server. No credential is ever shown."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_project import BIN, SMALLEST, commit, make_project

pytestmark = [pytest.mark.slow, pytest.mark.services]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Team:
    project: Path
    state: Path
    env: dict[str, str]          # a fresh shell's: the project's defaults apply
    client: dict[str, str]       # with the two exports `services up` prints
    up_output: str

    def alignpipe(self, *args: str, client: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "alignpipe"), *args], cwd=self.project, env=self.client if client else self.env,
                              capture_output=True, text=True, timeout=timeout)

    def passwords(self) -> list[str]:
        return [line.split(":", 4)[4] for line in (self.state / "services" / "pgpass").read_text().splitlines()]


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    # PostgreSQL runs as the `postgres` user under root: its folder must not sit under a private (0700) one
    home = Path(tempfile.mkdtemp(prefix="alignpipe-services-"))
    home.chmod(0o755)
    project = make_project(tmp_path_factory.mktemp("team-project"), SMALLEST)
    commit(project, "team project")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "ALIGNPIPE_HOME"))}
    env["ALIGNPIPE_HOME"] = str(home / "state")
    ports = {"--postgres-port": free_port(), "--mlflow-port": free_port(), "--prefect-port": free_port()}
    up = subprocess.run([str(BIN / "alignpipe"), "services", "up", "--root", str(project),
                         *[str(x) for pair in ports.items() for x in pair]],
                        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    exports = dict(line.strip().removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                   if line.strip().startswith("export "))
    assert set(exports) == {"MLFLOW_TRACKING_URI", "PREFECT_API_URL"}, up.stdout
    client = env | exports | {"PREFECT_HOME": str(home / "state" / "prefect")}
    yield Team(project, home / "state", env, client, up.stdout + up.stderr)
    subprocess.run([str(BIN / "alignpipe"), "services", "down", "--purge"], cwd=project, env=env, timeout=120)
    shutil.rmtree(home, ignore_errors=True)


def test_retrain_runs_through_the_worker_and_its_champion_loads_from_the_server(team):
    run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "retrain/alignpipe", "--watch",
                          "--watch-timeout", "900"], cwd=team.project, env=team.client, capture_output=True,
                         text=True, timeout=960)
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    worker_log = (team.state / "services" / "logs" / "worker.log").read_text()
    assert "v1 registered (alias 'challenger'); gate PASSED: promoted to champion" in worker_log

    load = subprocess.run([str(BIN / "python"), "-c", """
import components, mlflow
client = mlflow.MlflowClient()
version = client.get_model_version_by_alias('alignpipe-policy', 'champion')
print('champion', version.version, version.tags['gate.passed'])
print('artifacts', mlflow.get_run(version.run_id).info.artifact_uri)
model = mlflow.pyfunc.load_model('models:/alignpipe-policy@champion')
print('answer', model.predict(['Human: Hi!\\n\\nAssistant:'], params={'max_new_tokens': 4})[0])
"""], cwd=team.project, env=team.client, capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr[-3000:]
    assert "champion 1 true" in load.stdout
    assert "artifacts mlflow-artifacts:/" in load.stdout          # proxied by the server, not a local path
    assert any((team.state / "services" / "mlflow-artifacts").rglob("model.safetensors"))
    assert not (team.state / "mlartifacts").exists()

    inspect = subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "retrain/alignpipe"], env=team.client,
                             capture_output=True, text=True, timeout=120)
    assert re.search(r"'global_concurrency_limit': \{[^}]*'limit': 1,", inspect.stdout), inspect.stdout


def test_no_credential_is_printed_logged_or_on_a_command_line(team):
    passwords = team.passwords()
    assert len(passwords) == 3 and all(len(p) >= 24 for p in passwords)   # superuser, mlflow, prefect
    status = team.alignpipe("services", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert all(f"{name} running" in " ".join(status.stdout.split()) for name in ("postgres", "mlflow", "prefect", "worker"))
    shown = [team.up_output, status.stdout, status.stderr]
    shown += [log.read_text(errors="replace") for log in (team.state / "services").rglob("*.log")]
    for pid_file in (team.state / "services").glob("*.pid"):
        proc = Path("/proc") / pid_file.read_text().strip()
        shown += [(proc / "cmdline").read_bytes().decode(errors="replace"),
                  (proc / "environ").read_bytes().decode(errors="replace")]
    assert len(shown) >= 8
    for password in passwords:
        assert not any(password in text for text in shown)
    assert oct((team.state / "services" / "pgpass").stat().st_mode & 0o777) == "0o600"


def test_down_stops_everything_and_status_says_so(team):
    down = team.alignpipe("services", "down")
    assert down.returncode == 0 and "postgres" in down.stdout, down.stdout + down.stderr
    status = team.alignpipe("services", "status")
    assert status.returncode == 2
    assert all(f"{name} stopped" in " ".join(status.stdout.split()) for name in ("postgres", "mlflow", "prefect", "worker"))
    assert "Traceback" not in status.stderr
