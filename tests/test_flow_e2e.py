"""The whole pipeline on its smallest configuration: real Prefect flow runs, real DVC, a real
MLflow registry, and the gate deciding on intervals.

One throwaway project goes through the runs a team would make: a first candidate, the same
run again, a better one, one trained on shuffled labels, one on another tokenizer, one on a
random untrained reference, and bad data. The data carries a planted behaviour
(``planted_data.py``) so that a real improvement is measurable at this size.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from e2e_project import BIN, SMALLEST, make_project, merge, save_tiny_reference, set_params, texts
from planted_data import EMAIL_DOMAIN, planted_rows, shuffle_training_labels, write_planted

pytestmark = pytest.mark.slow
MODEL_NAME = "e2e-policy"
SMALLEST_HERE = merge(SMALLEST, {"registry": {"experiment": "e2e", "model_name": MODEL_NAME}})
# longer training at a gentler rate: measured +0.034 [0.028, 0.041] paired separation over the first
STRONGER = {"cycles.relearn.steps": 8, "cycles.relearn.learning_rate": 3.0e-4}


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """The SFT reference; an untrained model with its tokenizer; a model with another tokenizer."""
    from components.modeling.models import build_tiny_model, load_tokenizer, save_model

    root = tmp_path_factory.mktemp("references")
    rows = planted_rows()
    sft = save_tiny_reference(root / "sft", texts(rows), sft_steps=150)
    tokenizer = load_tokenizer(sft)
    random_model = build_tiny_model(tokenizer, n_layer=1, n_embd=48, n_head=2, n_positions=64)
    other = [f"Human: Zebras {i} juggle violet kumquats?\n\nAssistant: Quietly, {i} times." for i in range(200)]
    return {"sft": sft, "random": save_model(random_model, tokenizer, root / "random"),
            "other_tokenizer": save_tiny_reference(root / "other", other, sft_steps=0, vocab_size=300)}


@pytest.fixture(scope="module")
def project(tmp_path_factory, references) -> Path:
    """A throwaway alignpipe project: the repo's stage graph and code, the planted data."""
    return make_project(tmp_path_factory.mktemp("project"), merge(SMALLEST_HERE, {"reference": {"model": str(references["sft"])}}))


def run(project: Path):
    from flows.retrain import retrain

    return retrain(root=str(project))


@pytest.fixture(scope="module")
def first_run(project, prefect_api_url):
    return run(project)


@pytest.fixture(scope="module")
def same_again(first_run, project):
    return run(project)


@pytest.fixture(scope="module")
def stronger_run(same_again, project):
    set_params(project, STRONGER)
    return run(project)


@pytest.fixture(scope="module")
def shuffled_run(stronger_run, project):
    from components.data.dataset import read_items

    items, _ = read_items(project / "artifacts" / "dataset")
    train_prompts = set(items.loc[items["split"] == "train", "prompt"])
    write_planted(project / "data" / "shuffled.jsonl", shuffle_training_labels(planted_rows(), train_prompts))
    set_params(project, {"data.source": "data/shuffled.jsonl"})
    try:
        return run(project)
    finally:
        set_params(project, {"data.source": "data/planted.jsonl"})


@pytest.fixture(scope="module")
def reference_runs(shuffled_run, project, references):
    """A candidate built on another tokenizer, then one on an untrained model with the same tokenizer."""
    results = {}
    try:
        for name in ("other_tokenizer", "random"):
            set_params(project, {"reference.model": str(references[name])})
            results[name] = run(project)
    finally:
        set_params(project, {"reference.model": str(references["sft"])})
    return results


def champion_version() -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version)


def test_first_candidate_separates_at_the_interval_and_becomes_a_loadable_champion(first_run, project):
    assert first_run.promoted and first_run.version == "1" and champion_version() == "1", first_run.gate.checks
    metrics = json.loads((project / "artifacts/metrics.json").read_text())
    assert metrics["separation_ci_low"] > 0 and metrics["n_pairs"] >= 40 and metrics["bootstrap_samples"] == 2000
    assert metrics["quarantined_rows"] == 2
    assert first_run.cycles == "1 of 1 cycles accepted by the dev gate"
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, "1")
    assert version.tags["gate.passed"] == "true" and float(version.tags["metric.separation_ci_low"]) > 0
    assert "B=2000" in version.tags["gate.checks"] and "seed=0" in version.tags["gate.checks"]
    assert version.description.startswith("**Gate PASSED") and "Who we align to" in version.description
    generated = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").predict(["Human: Hi there\n\nAssistant:"])
    assert len(generated) == 1 and isinstance(generated[0], str)


def test_per_pair_evidence_and_the_group_plot_are_in_mlflow(first_run, project):
    evidence = pd.read_parquet(project / "artifacts/evidence.parquet")
    assert {"pair_id", "prompt_id", "group", "pos_logp_delta", "neg_logp_delta", "separation",
            "pref_accuracy"} <= set(evidence.columns)
    metrics = json.loads((project / "artifacts/metrics.json").read_text())
    assert len(evidence) == metrics["n_pairs"]
    assert evidence["separation"].mean() == pytest.approx(metrics["separation"])
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(first_run.run_id, "plots")} | \
        {a.path for a in mlflow.MlflowClient().list_artifacts(first_run.run_id, "evidence")}
    assert {"plots/group_intervals.png", "evidence/evidence.parquet"} <= logged
    assert set(first_run.gate.groups["group"]) == {"chat", "forum"}
    description = mlflow.MlflowClient().get_model_version(MODEL_NAME, "1").description
    assert "| chat |" in description and "| forum |" in description


def test_the_same_run_again_registers_nothing(same_again):
    assert same_again.version is None and not same_again.promoted and same_again.gate is None
    assert "nothing registered" in same_again.skipped and "v1" in same_again.skipped
    assert [str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")] == ["1"]


def test_a_real_improvement_is_promoted_over_the_champion(stronger_run):
    assert stronger_run.promoted and stronger_run.version == "2", stronger_run.gate.checks
    assert stronger_run.gate.against == "champion v1"
    primary = next(line for line in stronger_run.gate.checks if line.startswith("PASS separation vs champion v1"))
    assert "paired improvement" in primary and "n=" in primary and "B=2000" in primary
    assert champion_version() == "2"


def test_dvc_repro_right_after_a_run_has_nothing_to_do(stronger_run, project):
    repro = subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, capture_output=True, text=True, check=True)
    # only the params stage runs every time; it resolves the same settings, so nothing downstream reruns
    assert re.findall(r"Running stage '(\w+)'", repro.stdout) == ["params"], repro.stdout
    shown = subprocess.run([str(BIN / "dvc"), "metrics", "show", "--json"], cwd=project, capture_output=True,
                           text=True, check=True)
    assert "separation_ci_low" in shown.stdout


def test_a_candidate_trained_on_shuffled_labels_stays_a_challenger(shuffled_run):
    assert shuffled_run.version == "3" and not shuffled_run.promoted, shuffled_run.gate.checks
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == "3"
    assert champion_version() == "2"


def test_a_candidate_that_cannot_be_compared_with_the_champion_is_not_promoted(reference_runs):
    other = reference_runs["other_tokenizer"]
    assert not other.promoted and champion_version() == "2"
    assert any(line.startswith("FAIL cannot compare with champion v2") and "tokenizer" in line
               for line in other.gate.checks)


def test_a_random_untrained_reference_never_yields_a_champion(reference_runs):
    random = reference_runs["random"]
    assert random.version is not None and not random.promoted, random.gate.checks
    assert champion_version() == "2"


def test_no_email_address_reaches_mlflow_or_prefect(reference_runs):
    """Annotators are e-mail addresses in the source; every byte of the tracking store, the
    registry and the artifacts is searched for them."""
    from components.environment import state_dir

    leaks = [str(path) for path in state_dir().rglob("*") if path.is_file() and EMAIL_DOMAIN.encode() in path.read_bytes()]
    assert leaks == []


def test_every_stage_is_tracked_and_the_summary_shows_intervals(first_run, prefect_api_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    run_info = mlflow.get_run(first_run.run_id)
    children = mlflow.search_runs(experiment_ids=[run_info.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{first_run.run_id}'")
    assert set(children["tags.mlflow.runName"]) == {"simulate", "ingest", "reference", "cycles", "evaluate"}
    assert run_info.data.metrics["separation_ci_low"] > 0 and run_info.data.metrics["gate.passed"] == 1.0
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retrain-summary"])))
    summaries = [a.data for a in artifacts]
    first = next(s for s in summaries if f"`{MODEL_NAME}` v1" in s)
    assert "PASS separation" in first and "B=2000" in first and "| forum |" in first
    assert any(f"nothing registered for `{MODEL_NAME}`" in s for s in summaries)   # the same run again


def _corrupt(lines: list[str], rule: str) -> list[str]:
    """Ten bad rows of ~600: above the 1% that quarantine tolerates."""
    bad = {"malformed_json": '{"prompt": "unterminated',
           "non_empty_text": json.dumps({"prompt": "Human: Hi\n\nAssistant:", "response": " ", "label": "negative"})}
    return [bad[rule] if 50 <= index < 60 else line for index, line in enumerate(lines)]


@pytest.mark.parametrize("rule", ["malformed_json", "non_empty_text"])
def test_too_much_bad_data_stops_the_run_and_leaves_registry_and_dataset_untouched(rule, reference_runs, project):
    good_manifest = (project / "artifacts/dataset/manifest.json").read_text()
    versions_before = {str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")}
    lines = (project / "data/planted.jsonl").read_text().splitlines()
    (project / "data/bad.jsonl").write_text("\n".join(_corrupt(lines, rule)) + "\n")
    set_params(project, {"data.source": "data/bad.jsonl"})
    try:
        from flows.retrain import retrain

        state = retrain(root=str(project), return_state=True)
        ingest = subprocess.run([str(BIN / "alignpipe"), "stage", "ingest"], cwd=project, capture_output=True, text=True)
    finally:
        set_params(project, {"data.source": "data/planted.jsonl"})
    assert state.is_failed() and "stage 'ingest'" in state.message and "nothing registered" in state.message
    assert ingest.returncode == 2 and f"data/bad.jsonl:51: {rule}" in ingest.stderr, ingest.stderr
    assert "Traceback" not in ingest.stderr
    versions_after = {str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")}
    assert versions_after == versions_before and champion_version() == "2"
    assert (project / "artifacts/dataset/manifest.json").read_text() == good_manifest


def test_deployment_carries_the_params_schedule(project):
    from flows.retrain import deployment

    deployed = deployment(str(project))
    assert deployed.name == "retrain-scheduled"
    assert deployed.schedules[0].schedule.cron == yaml.safe_load((project / "params.yaml").read_text())["schedule"]["cron"]


def test_weights_rewritten_in_place_make_the_reference_stage_stale(reference_runs, project, references):
    """DVC hashes the folder ``reference.model`` names (through artifacts/inputs), so plain
    ``dvc status`` notices new weights under the same path."""
    def status() -> dict:
        out = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=project, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    run(project)  # the last runs used other references: bring the pipeline back to the SFT one
    assert "reference" not in status()
    weights = references["sft"] / "model.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes((references["random"] / "model.safetensors").read_bytes())
        assert "reference" in status(), status()
    finally:
        weights.write_bytes(original)
    assert "reference" not in status()
