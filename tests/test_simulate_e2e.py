"""The sandbox end to end on the command line, on the smallest configuration: a project after
`alignpipe run` (a copy of the shared trained project, registered again under this module's
name: nothing to train), then `alignpipe simulate` killed (SIGKILL) after its first round and run
again (it resumes and ends with the records of an uninterrupted run), then `alignpipe run -S
sandbox.enabled=true`: the sandbox's rows are ingested beside the planted data, named in the
data card, and retrain registers a new version from them."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import time

import pytest
from mlflow import MlflowClient

from e2e_project import BIN, alignpipe, set_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("on_shared_prefect")]
NAME = "sandbox-policy"
SETTINGS = {"registry.experiment": "sandbox", "registry.model_name": NAME,
            "sandbox.agents": 4, "sandbox.rounds": 3, "sandbox.memories_per_agent": 12, "sandbox.retrieval": "lexical",
            "sandbox.max_new_tokens": 12, "sandbox.questions": "data/planted.jsonl", "sandbox.memories": "data/planted.jsonl"}


@pytest.fixture(scope="module")
def project(trained, tmp_path_factory):
    root = trained.copy(tmp_path_factory.mktemp("sandbox") / "project")
    set_params(root, SETTINGS)
    done = alignpipe(root, "run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{NAME} v1 registered" in done.stdout, done.stdout[-3000:]
    return root


def kill_after_first_round(project) -> None:
    first_round = project / "artifacts" / "sandbox" / "rounds" / "round-001.jsonl"
    process = subprocess.Popen([str(BIN / "alignpipe"), "simulate"], cwd=project, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not first_round.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert first_round.exists()


def test_a_killed_simulation_resumes_and_matches_an_uninterrupted_one(project):
    kill_after_first_round(project)
    resumed = alignpipe(project, "simulate")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    sandbox = project / "artifacts" / "sandbox"
    rounds = sandbox / "rounds"
    assert (rounds / "round-003.jsonl").stat().st_mtime > (rounds / "round-001.jsonl").stat().st_mtime
    assert "resuming after round" in resumed.stdout + resumed.stderr
    assert "alignpipe simulate: run" in resumed.stdout and "round 3:" in resumed.stdout
    records = (sandbox / "interactions.jsonl").read_bytes()
    shutil.rmtree(sandbox)
    whole = alignpipe(project, "simulate")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert (sandbox / "interactions.jsonl").read_bytes() == records
    lines = [json.loads(line) for line in records.decode().splitlines()]
    assert len(lines) == 4 * 3 and {r["backends"]["agent"] for r in lines} == {f"models:/{NAME}/1"}


def test_retrain_learns_from_the_sandbox_rows_with_their_provenance(project):
    before = {v.version for v in MlflowClient().search_model_versions(f"name='{NAME}'")}
    done = alignpipe(project, "run", "-S", "sandbox.enabled=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((project / "artifacts" / "sandbox" / "summary.json").read_text())
    assert "stage simulate: ran" in done.stdout + done.stderr
    assert f"sandbox run {summary['run_id']}" in done.stdout + done.stderr
    manifest = json.loads((project / "artifacts" / "dataset" / "manifest.json").read_text())
    assert "artifacts/sandbox/feedback.jsonl" in manifest["sources"]
    card = (project / "artifacts" / "dataset" / "data_card.md").read_text()
    assert "| sandbox |" in card and f"sandbox-run:{summary['run_id']}" in card
    after = {v.version for v in MlflowClient().search_model_versions(f"name='{NAME}'")}
    assert len(after - before) == 1, done.stdout[-2000:]   # the dataset changed: a new candidate
    again = alignpipe(project, "run", "-S", "sandbox.enabled=true")
    assert again.returncode == 0 and "nothing registered" in again.stdout, again.stdout[-2000:]
