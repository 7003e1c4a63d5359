"""The command line as a user types it, on the smallest configuration: ``alignpipe run`` in
a fresh git + DVC project (the session's shared trained project, ``trained_project.py``), then,
in a copy of it, another params file and ``-S`` overrides (before and after the command), bad
data, ``alignpipe status``, ``dvc metrics diff`` and ``dvc plots show``. Also what the MLflow
parent run holds for a reviewer afterwards.

``test_the_first_run_prints_a_command_that_works_as_pasted`` is the smoke test ``make test``
runs: a newcomer's first run, end to end, and the model it registered loaded as printed."""

from __future__ import annotations

import json
import subprocess

import mlflow
import pandas as pd
import pytest
import yaml

from e2e_project import BIN, alignpipe
from trained_project import EXPERIMENT, MODEL_NAME

pytestmark = pytest.mark.slow
ALT_MODEL_NAME = "cli-alt-policy"


def dvc(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dvc"), *args], cwd=project, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(trained, tmp_path_factory):
    """This module's copy of the trained project: its later runs change the workspace."""
    return trained.copy(tmp_path_factory.mktemp("cli") / "project")


@pytest.fixture(scope="module")
def first(trained):
    """The first run, committed with its pipeline state (what `dvc metrics diff` compares with)."""
    return trained.run


@pytest.fixture(scope="module")
def alternative(first, project, on_shared_prefect):
    """`--params alt.yaml` after the command, with an override; then the same before it."""
    alt = yaml.safe_load((project / "params.yaml").read_text())
    alt["registry"]["model_name"] = ALT_MODEL_NAME
    alt["cycles"]["relearn"]["steps"] = 6
    (project / "alt.yaml").write_text(yaml.safe_dump(alt))
    after = alignpipe(project, "run", "--params", "alt.yaml", "-S", "cycles.anchors.k=3")
    before = alignpipe(project, "--params", "alt.yaml", "-S", "cycles.anchors.k=3", "run")
    return after, before


def parent_run(run_id: str):
    return mlflow.MlflowClient().get_run(run_id)


def test_the_parent_run_holds_what_a_reviewer_needs(first, project):
    client = mlflow.MlflowClient()
    version = client.get_model_version(MODEL_NAME, "1")
    run = parent_run(version.run_id)
    assert run.info.run_name == "retrain" and version.description.startswith("**Gate ")
    artifacts = {a.path for folder in ("", "dataset", "evidence", "plots") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"params.yaml", "metrics.json", "cycles.json", "dataset/data_card.md", "dataset/validation.json",
            "dataset/manifest.json", "evidence/evidence.parquet", "plots/sft_loss.png", "plots/relearn_loss.png",
            "plots/cycle_dev.png", "plots/rewards.png", "plots/group_intervals.png"} <= artifacts, artifacts
    manifest = json.loads((project / "artifacts/dataset/manifest.json").read_text())
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.digest == manifest["version"] and dataset.name == "planted.jsonl"
    # per-step history, logged while training: one point per SFT step and per relearn step
    assert [m.step for m in client.get_metric_history(run.info.run_id, "sft.loss")] == list(range(1, 13))
    assert len(client.get_metric_history(run.info.run_id, "relearn.learning_rate")) == 4
    assert run.data.metrics["separation_ci_low"] <= run.data.metrics["separation"] <= run.data.metrics["separation_ci_high"]


def test_stage_runs_last_as_long_as_their_stages(first):
    run_id = mlflow.MlflowClient().get_model_version(MODEL_NAME, "1").run_id
    children = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    seconds = dict(zip(children["tags.mlflow.runName"], (children["end_time"] - children["start_time"]).dt.total_seconds()))
    assert set(seconds) == {"simulate", "ingest", "reference", "cycles", "evaluate"}
    assert seconds["reference"] > 2 and seconds["cycles"] > 2, seconds  # not logged after the fact
    history = mlflow.MlflowClient().get_metric_history(children.loc[children["tags.mlflow.runName"] == "reference", "run_id"].item(), "sft.loss")
    assert len(history) == 12


@pytest.mark.smoke
def test_the_first_run_prints_a_command_that_works_as_pasted(first, project):
    load_line = next(line for line in first.stdout.splitlines() if line.strip().startswith("load it:"))
    command = load_line.split("load it:", 1)[1].strip()
    pasted = subprocess.run(command, shell=True, cwd=project, capture_output=True, text=True)
    assert pasted.returncode == 0 and pasted.stdout.strip().startswith("["), pasted.stderr[-2000:]


def test_params_given_after_the_command_reach_every_stage(alternative, project):
    after, _ = alternative
    assert after.returncode == 0, after.stderr[-3000:]
    assert f"{ALT_MODEL_NAME} v1 registered" in after.stdout and f"models:/{ALT_MODEL_NAME}@" in after.stdout
    resolved = yaml.safe_load((project / "artifacts/params.yaml").read_text())
    assert resolved["cycles"]["relearn"]["steps"] == 6 and resolved["cycles"]["anchors"]["k"] == 3
    assert "alt.yaml" in (project / "artifacts/params.yaml").read_text().splitlines()[0]
    relearn = pd.read_csv(project / "artifacts/plots/cycles/relearn_loss.csv")
    assert relearn["step"].max() == 6  # the cycles stage trained with the file's value
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["cycles"]["params"]["artifacts/params.yaml"]["cycles"]["anchors"]["k"] == 3
    tags = mlflow.MlflowClient().get_model_version(ALT_MODEL_NAME, "1").tags
    assert json.loads(tags["params"])["cycles.relearn.steps"] == 6


def test_params_given_before_the_command_mean_the_same(alternative):
    _, before = alternative
    assert before.returncode == 0, before.stderr[-3000:]
    assert f"nothing registered: the candidate equals {ALT_MODEL_NAME} v1" in before.stdout


def test_status_shows_registry_and_what_an_edit_makes_stale(alternative, project):
    shown = alignpipe(project, "status")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"\n  {MODEL_NAME}:\n" in text and ("challenger: v1 " in text or "champion:   v1 " in text), text
    assert "reference  up to date" in text
    # the workspace ran with alt.yaml last: under params.yaml, cycles is stale, and says why
    cycles = next(line for line in text.splitlines() if line.strip().startswith("cycles "))
    assert cycles.split(":", 1)[0].split() == ["cycles", "stale"], text
    assert set(cycles.split("since the last run: ")[1].split(", ")) == {"cycles.relearn.steps", "cycles.anchors.k"}
    edited = alignpipe(project, "--params", "alt.yaml", "status", "-S", "cycles.anchors.k=3", "-S", "seed=7")
    assert f"{ALT_MODEL_NAME}:" in edited.stdout
    assert "reference  stale: params changed since the last run: seed" in edited.stdout


def test_dvc_compares_runs_and_renders_plots(alternative, project):
    diff = dvc(project, "metrics", "diff", "--json")
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)
    assert "artifacts/cycles.json" in changed or "artifacts/metrics.json" in changed, changed
    plots = dvc(project, "plots", "show", "--json")
    assert plots.returncode == 0, plots.stderr
    shown = json.dumps(json.loads(plots.stdout))
    for image in ("sft_loss.png", "relearn_loss.png", "cycle_dev.png", "rewards.png"):
        assert image in shown
    assert "training_loss" in shown
    assert dvc(project, "plots", "show", "-o", "dvc_plots").returncode == 0
    assert (project / "dvc_plots" / "index.html").exists()


def test_bad_data_through_run_exits_2_with_the_error_once_and_no_traceback(alternative, project, on_shared_prefect):
    lines = (project / "data/planted.jsonl").read_text().splitlines()
    lines[50:60] = ['{"prompt": "unterminated'] * 10
    (project / "data/bad.jsonl").write_text("\n".join(lines) + "\n")
    versions = len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'"))
    done = alignpipe(project, "run", "-S", "data.source=data/bad.jsonl")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    assert output.count("data/bad.jsonl:51: malformed_json") == 1, output[-3000:]
    assert "nothing registered" in done.stderr
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")) == versions


def test_a_params_mistake_exits_2_naming_the_key(project, on_shared_prefect):
    done = alignpipe(project, "run", "-S", "cycles.relearn.stpes=3")
    assert done.returncode == 2 and "cycles.relearn.stpes" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_serve_runs_against_a_server_a_person_can_open_and_stops_it(project):
    """No temporary, invisible server: `serve` starts one on the port (the UI lives there),
    registers the deployment on it, and a plain `kill` stops both."""
    import os
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    serve = subprocess.Popen([str(BIN / "alignpipe"), "serve", "--port", str(port)], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("serving deployment" in line for line in lines):
            lines.append(serve.stdout.readline())
            assert serve.poll() is None, "".join(lines)
        assert f"runs and their logs: http://127.0.0.1:{port}" in lines[-1]
        deadline = time.monotonic() + 60
        listed = ""
        api = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "COLUMNS": "250"}   # rich tables: no truncation
        while "personalize-after-retrain" not in listed and time.monotonic() < deadline:
            time.sleep(1)
            listed = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], capture_output=True, text=True,
                                    env=api).stdout
        assert "retrain-scheduled" in listed and "personalize-after-retrain" in listed
        # personalize runs when a retrain run completes: an automation on the server says so
        automations = subprocess.run([str(BIN / "prefect"), "automation", "inspect",
                                      "personalize-after-retrain__automation_1", "--json"],
                                     capture_output=True, text=True, env=api).stdout
        assert "prefect.flow-run.Completed" in automations and '"retrain"' in automations
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
