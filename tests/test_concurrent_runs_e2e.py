"""Two real runs of one project at once: one trains and registers; a second started without
``--wait`` exits 2 at once naming the holder; one started with ``--wait`` waits, then finds
the candidate already registered. Nothing is registered twice, nothing half-written.

A fresh project of its own, not a copy of the shared trained one: the first run must hold the
lock while the others meet it, and a run from scratch does, on any machine; its own state and
Prefect's temporary servers too, as two people running at once have them."""

from __future__ import annotations

import os
import subprocess
import time

import mlflow
import pytest

from e2e_project import BIN, SMALLEST, commit, make_project, merge

pytestmark = pytest.mark.slow
MODEL = "concurrent-policy"


def test_two_runs_at_once_one_waits_one_stops_naming_the_holder(tmp_path):
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", merge(SMALLEST, {"registry": {"model_name": MODEL}}))
    commit(project, "project")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | \
        {"ALIGNPIPE_HOME": str(tmp_path / "state"), "MLFLOW_TRACKING_URI": tracking}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "alignpipe"), "run", *args], cwd=project, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    first = start()
    lock = project / ".dvc" / "tmp" / "alignpipe-run.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.5)
    waiting = start("--wait", "900")
    impatient = subprocess.run([str(BIN / "alignpipe"), "run"], cwd=project, env=env, capture_output=True, text=True,
                               timeout=300)
    assert impatient.returncode == 2, impatient.stdout + impatient.stderr
    assert "another run holds the project lock" in impatient.stderr and f"pid {first.pid} " in impatient.stderr
    assert "nothing registered, no alias moved" in impatient.stderr and "Traceback" not in impatient.stderr

    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:] + err[-3000:]
    assert f"{MODEL} v1 registered" in out
    out, err = waiting.communicate(timeout=900)
    assert waiting.returncode == 0, out[-3000:] + err[-3000:]
    assert f"waiting up to 900 s for the project lock, held by pid {first.pid} " in out + err
    assert f"nothing registered: the candidate equals {MODEL} v1" in out

    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].tags["registration"] == "complete"
