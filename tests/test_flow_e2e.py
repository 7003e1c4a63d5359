"""The whole pipeline on its smallest configuration: a real Prefect flow run, real DVC,
real MLflow registry. Then bad data: the run fails and the registry stays as it was."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import REPO_ROOT, SAMPLE

pytestmark = pytest.mark.slow
MODEL_NAME = "e2e-policy"
SMALLEST = {
    "data": {"source": "data/small.jsonl", "dev_fraction": 0.15, "test_fraction": 0.15},
    "validation": {"min_rows": 50},
    "reference": {"vocab_size": 400, "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2},
                  "sft": {"steps": 30, "batch_size": 8, "learning_rate": 3.0e-3, "warmup_steps": 2}},
    "sequence": {"max_prompt_tokens": 32, "max_response_tokens": 16},
    "cycles": {"count": 2, "anchors": {"k": 2, "max_new_tokens": 8},
               "relearn": {"steps": 6, "batch_size": 4, "learning_rate": 3.0e-3, "max_prompts": 24},
               "gate": {"max_pos_drop": 100.0}},
    "evaluate": {"max_pairs": 30, "kl_prompts": 4, "max_new_tokens": 8},
    # Thresholds open: a 1-layer model on 150 dialogues proves the mechanics, not quality; the
    # embedded default's own gate (make run) is where quality is judged.
    "gate": {"max_pos_drop": 100.0, "min_pref_accuracy": 0.0},
    "registry": {"experiment": "e2e", "model_name": MODEL_NAME},
}


def merge(base: dict, override: dict) -> dict:
    return {k: merge(base[k], v) if isinstance(v, dict) else v for k, v in override.items()} | \
        {k: v for k, v in base.items() if k not in override}


def set_source(project: Path, source: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = source
    (project / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A throwaway alignpipe project: the repo's stage graph and code, 150 sample dialogues."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    with gzip.open(SAMPLE, "rt") as lines:
        (root / "data" / "small.jsonl").write_text("".join(next(lines) for _ in range(150)))
    params = merge(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), SMALLEST)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def first_run(project, prefect_server):
    from flows.retrain import retrain

    return retrain(root=str(project))


def test_flow_registers_and_promotes_a_loadable_champion(first_run, project):
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert first_run.promoted and str(champion.version) == str(challenger.version) == first_run.version == "1"
    manifest = json.loads((project / "artifacts/dataset/manifest.json").read_text())
    assert champion.tags["data_version"] == manifest["version"]
    assert champion.tags["gate.passed"] == "true" and champion.tags["code_commit"]
    assert json.loads(champion.tags["params"])["cycles.count"] == 2
    assert "Who we align to" in champion.description
    generated = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").predict(["Human: Hi there\n\nAssistant:"])
    assert len(generated) == 1 and isinstance(generated[0], str)


def test_held_out_metrics_are_written_and_negatives_pushed_down(first_run, project):
    metrics = json.loads((project / "artifacts/metrics.json").read_text())
    assert set(metrics) >= {"neg_logp_delta", "pos_logp_delta", "pref_accuracy", "kl_ref", "distinct_2", "n_pairs"}
    assert metrics["neg_logp_delta"] < 0
    assert 0 <= metrics["pref_accuracy"] <= 1 and metrics["n_pairs"] > 0
    cycles = json.loads((project / "artifacts/cycles.json").read_text())["cycles"]
    assert [c["forget_op"] for c in cycles] == ["none", "reset_top"]


def test_every_stage_is_tracked_in_mlflow(first_run):
    run = mlflow.get_run(first_run.run_id)
    children = mlflow.search_runs(experiment_ids=[run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{first_run.run_id}'")
    assert set(children["tags.mlflow.runName"]) == {"ingest", "reference", "cycles", "evaluate"}
    assert run.data.metrics["neg_logp_delta"] < 0 and run.data.params["cycles.relearn.objective"] == "d2o"


def test_flow_publishes_a_markdown_summary(first_run, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retrain-summary"])))
    assert artifacts and f"`{MODEL_NAME}` v1" in artifacts[0].data and "neg_logp_delta" in artifacts[0].data


def test_dvc_repro_right_after_has_nothing_to_do(first_run, project):
    dvc = str(Path(sys.executable).parent / "dvc")
    repro = subprocess.run([dvc, "repro"], cwd=project, capture_output=True, text=True, check=True)
    assert "Data and pipelines are up to date" in repro.stdout
    shown = subprocess.run([dvc, "metrics", "show", "--json"], cwd=project, capture_output=True, text=True, check=True)
    assert "neg_logp_delta" in shown.stdout


def _empty_rejected(line: str) -> str:
    row = json.loads(line)
    return json.dumps({**row, "rejected": row["rejected"][: row["rejected"].rindex("Assistant:") + len("Assistant:")]})


CORRUPTIONS = {  # name -> (lines -> corrupted lines, 1-based line of the fault, rule named)
    "malformed_line": (lambda ls: ls[:40] + ['{"chosen": "unterminated'] + ls[41:], 41, "malformed_json"),
    "missing_field": (lambda ls: ls[:40] + [json.dumps({"chosen": json.loads(ls[40])["chosen"]})] + ls[41:], 41,
                      "missing_field"),
    "empty_response": (lambda ls: ls[:40] + [_empty_rejected(ls[40])] + ls[41:], 41, "non_empty_text"),
    "duplicate": (lambda ls: ls[:60] + [ls[10]] + ls[60:], 61, "duplicate"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_bad_data_stops_the_run_and_leaves_registry_and_dataset_untouched(case, first_run, project):
    from flows.retrain import retrain

    corrupt, line, rule = CORRUPTIONS[case]
    good_manifest = (project / "artifacts/dataset/manifest.json").read_text()
    lines = (project / "data/small.jsonl").read_text().splitlines()
    (project / "data/bad.jsonl").write_text("\n".join(corrupt(lines)) + "\n")
    set_source(project, "data/bad.jsonl")
    try:
        with pytest.raises(Exception):
            retrain(root=str(project))
        ingest = subprocess.run([str(Path(sys.executable).parent / "alignpipe"), "stage", "ingest"],
                                cwd=project, capture_output=True, text=True)
    finally:
        set_source(project, "data/small.jsonl")
    assert ingest.returncode == 2 and f"data/bad.jsonl:{line}: {rule}" in ingest.stderr
    client = mlflow.MlflowClient()
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")] == ["1"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    assert (project / "artifacts/dataset/manifest.json").read_text() == good_manifest


def test_deployment_carries_the_params_schedule(project):
    from flows.retrain import deployment

    deployed = deployment(str(project))
    assert deployed.name == "retrain-scheduled"
    assert deployed.schedules[0].schedule.cron == yaml.safe_load((project / "params.yaml").read_text())["schedule"]["cron"]
