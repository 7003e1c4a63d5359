"""The team's shape, for real, on loopback: ``alignpipe services up`` starts PostgreSQL, an
MLflow server and a Prefect server on it and a process worker; ``retrain`` runs through the
worker against them and its champion loads from the server. No credential is ever shown."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
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


def mlflow_server(team: Team):
    from components.services.stack import Ports, Stack

    folder = team.state / "services"
    stack = Stack(folder, Ports(**json.loads((folder / "services.json").read_text())["ports"]))
    return stack.mlflow(), stack.environment("mlflow")


def registry_state(team: Team) -> list[tuple[str, list[str], str, str]]:
    """(version, aliases, registration tag, gate.passed) of every version, read from the server."""
    read = subprocess.run([str(BIN / "python"), "-c", """
import mlflow
client = mlflow.MlflowClient()
aliases = client.get_registered_model('alignpipe-policy').aliases
for v in client.search_model_versions("name = 'alignpipe-policy'"):
    print(v.version, ','.join(sorted(a for a, n in aliases.items() if str(n) == str(v.version))) or '-',
          v.tags.get('registration'), v.tags.get('gate.passed'))
"""], env=team.client, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr[-2000:]
    return sorted(tuple(line.split()) for line in read.stdout.splitlines())


def test_a_tracking_server_that_blinks_is_retried_one_that_stays_down_stops_the_run_cleanly(team):
    server, server_env = mlflow_server(team)
    before = registry_state(team)
    server.stop()
    down = team.alignpipe("run", client=True)
    assert down.returncode == 2, down.stdout[-2000:] + down.stderr[-2000:]
    assert "the MLflow tracking server at http://127.0.0.1:" in down.stderr and "does not answer" in down.stderr
    assert "Traceback" not in down.stderr

    blink = subprocess.Popen([str(BIN / "alignpipe"), "run"], cwd=team.project, env=team.client, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(8)                                   # the run is retrying its first request meanwhile
    server.start(server_env)
    out, _ = blink.communicate(timeout=900)
    assert blink.returncode == 0, out[-3000:]
    assert "nothing registered: the candidate equals alignpipe-policy v1" in out
    assert registry_state(team) == before


def test_a_server_lost_while_registering_leaves_no_half_registered_version(team):
    server, server_env = mlflow_server(team)
    run = subprocess.Popen([str(BIN / "alignpipe"), "run", "-S", "cycles.relearn.steps=3"], cwd=team.project,
                           env=team.client, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = []
    for line in run.stdout:                         # stop the server as the gate decides: register comes next
        seen.append(line)
        if "gate: " in line:
            server.stop()
            break
    out = "".join(seen) + run.communicate(timeout=900)[0]
    assert run.returncode == 2, out[-3000:]
    # Prefect logs the failed task's exception; the run's own verdict is one line, last
    assert out.strip().splitlines()[-1].startswith("alignpipe run: error: the MLflow tracking server at http://"), out[-3000:]
    assert "does not answer" in out.strip().splitlines()[-1]
    server.start(server_env)
    again = team.alignpipe("run", "-S", "cycles.relearn.steps=3", client=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    state = registry_state(team)
    assert all(registration == "complete" for _, _, registration, _ in state), state
    assert all(passed == "true" for _, aliases, _, passed in state if "champion" in aliases), state
    assert sum("challenger" in aliases for _, aliases, _, _ in state) == 1, state


def test_down_stops_everything_and_status_says_so(team):
    down = team.alignpipe("services", "down")
    assert down.returncode == 0 and "postgres" in down.stdout, down.stdout + down.stderr
    status = team.alignpipe("services", "status")
    assert status.returncode == 2
    assert all(f"{name} stopped" in " ".join(status.stdout.split()) for name in ("postgres", "mlflow", "prefect", "worker"))
    assert "Traceback" not in status.stderr
