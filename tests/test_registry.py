"""Registry actions against a real sqlite MLflow store (the conftest isolates it per session).

One policy is logged per session (``logged_policy`` in conftest.py) and registered under a
fresh ``model_name`` in each test, so the tests stay independent without paying for
log_model more than once.
"""

from __future__ import annotations

import ast
import math
import types
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from components.environment import state_dir
from components.registry import registry, tracking
from components.registry.registry import RegistryError

PROMPT = "Human: hi\n\nAssistant:"
PICKLE_SUFFIXES = {".pkl", ".pickle", ".bin", ".pt", ".pth", ".joblib"}


def _register(logged_policy, model_name, **tags) -> str:
    return registry.register_candidate(logged_policy["model_uri"], model_name, tags, "test candidate")


def test_ensure_experiment_puts_artifacts_under_state_dir():
    experiment_id = tracking.ensure_experiment("test-artifact-root")
    assert tracking.ensure_experiment("test-artifact-root") == experiment_id  # idempotent
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.artifact_location == (state_dir() / "mlartifacts").as_uri()
    with mlflow.start_run() as run:
        assert run.info.experiment_id == experiment_id


def test_finite_metrics_keeps_only_finite_numbers():
    metrics = {"a": 1, "b": 2.5, "nan": math.nan, "inf": math.inf, "s": "3", "none": None, "t": torch.tensor(0.5)}
    assert tracking.finite_metrics(metrics) == {"a": 1.0, "b": 2.5, "t": 0.5}


def test_text_generator_is_self_contained():
    """A registered model must load without this project installed."""
    source = Path(registry.TEXT_GENERATOR_PATH).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= {"mlflow", "pandas", "torch", "transformers", "peft"}, imported   # peft: adapters only


def test_batched_generation_matches_one_by_one(tiny_model_dir, tmp_path):
    """Left padding must not change greedy continuations (positions come from the mask)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.registry.text_generator import TextGenerator

    # Sharpen the random weights so that greedy decoding is not a near-uniform tie.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)

    generator = TextGenerator()
    generator.load_context(types.SimpleNamespace(artifacts={"model_dir": str(tmp_path)}))
    prompts = [PROMPT, "Human: What is the capital of France? Tell me more.\n\nAssistant:", "a"]
    batched = generator.predict(None, prompts, {"max_new_tokens": 8})
    assert batched == [generator.predict(None, [p], {"max_new_tokens": 8})[0] for p in prompts]
    assert len(set(batched)) > 1
    frame = pd.DataFrame({"id": [1], "prompt": [PROMPT]})
    assert generator.predict(None, frame, {"max_new_tokens": 8}) == batched[:1]
    assert generator.predict(None, [], None) == []


def test_log_policy_model_needs_a_run(tiny_model_dir):
    with pytest.raises(RegistryError, match="active MLflow run"):
        registry.log_policy_model(tiny_model_dir)


def test_logged_model_holds_safetensors_and_no_pickles(logged_policy):
    local = Path(mlflow.artifacts.download_artifacts(logged_policy["model_uri"]))
    files = [p for p in local.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "model.safetensors" in names
    assert "text_generator.py" in names
    assert not [p for p in files if p.suffix in PICKLE_SUFFIXES], files
    requirements = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in requirements)
    assert any(r.startswith("transformers==") for r in requirements)


def test_a_version_carries_its_reference_and_loads_as_before(tiny_model_dir, logged_policy, model_name, tmp_path):
    """The tiny default's reference travels whole; a model not trained here by its pointer; the
    pyfunc still loads and answers; a version logged without one says so (None)."""
    pointer = tmp_path / "pointer"
    pointer.mkdir()
    (pointer / "reference.json").write_text('{"model": "/models/llama-7b", "parameters": 7000000000}\n')
    tracking.ensure_experiment("test-registry")
    with mlflow.start_run():
        whole = registry.log_policy_model(tiny_model_dir, reference_dir=tiny_model_dir)
        pointed = registry.log_policy_model(tiny_model_dir, reference_dir=pointer)
        with pytest.raises(RegistryError, match="no reference folder"):
            registry.log_policy_model(tiny_model_dir, reference_dir=tmp_path / "missing")
    version = registry.register_candidate(whole, model_name, {}, "with its reference")

    local = registry.local_model(f"models:/{model_name}/{version}")
    assert {p.name: p.read_bytes() for p in local.reference_dir.iterdir()} == \
        {p.name: p.read_bytes() for p in tiny_model_dir.iterdir()}
    assert (local.model_dir / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    answers = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").predict([PROMPT], params={"max_new_tokens": 4})
    assert len(answers) == 1 and isinstance(answers[0], str)
    assert (registry.local_model(pointed).reference_dir / "reference.json").read_text() == \
        (pointer / "reference.json").read_text()
    assert registry.local_model(logged_policy["model_uri"]).reference_dir is None
    assert registry.local_model(tiny_model_dir) == registry.LocalModel(tiny_model_dir, None)


def test_register_candidate_sets_challenger_tags_and_description(logged_policy, model_name):
    version = _register(logged_policy, model_name, d2o_beta=0.1, notes="x" * 20_000)
    assert version == "1"
    client = mlflow.MlflowClient()
    challenger = client.get_model_version_by_alias(model_name, "challenger")
    assert str(challenger.version) == version
    assert challenger.tags["d2o_beta"] == "0.1"
    assert len(challenger.tags["notes"]) == registry.TAG_VALUE_LIMIT
    assert challenger.description == "test candidate"
    assert registry.champion(model_name) is None  # registered, not promoted

    assert _register(logged_policy, model_name) == "2"
    assert str(client.get_model_version_by_alias(model_name, "challenger").version) == "2"


def test_champion_of_unknown_model_is_none():
    assert registry.champion(f"missing-{uuid.uuid4().hex[:8]}") is None


def test_promote_then_load_champion_and_predict(logged_policy, model_name):
    version = _register(logged_policy, model_name)
    registry.promote(model_name, version, "beat the baseline")

    champion = registry.champion(model_name)
    assert str(champion.version) == version
    assert champion.tags["promoted_reason"] == "beat the baseline"

    model = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    output = model.predict([PROMPT])
    assert isinstance(output, list) and len(output) == 1 and isinstance(output[0], str)
    # Parameters go through the signature; a seed makes sampling repeatable.
    params = {"max_new_tokens": 4, "temperature": 1.0, "seed": 7}
    frame = pd.DataFrame({"prompt": [PROMPT, "Human: bye\n\nAssistant:"]})
    assert model.predict(frame, params=params) == model.predict(frame, params=params)


def test_rollback_returns_to_previous_champion(logged_policy, model_name):
    v1 = _register(logged_policy, model_name)
    v2 = _register(logged_policy, model_name)
    registry.promote(model_name, v1, "first")
    registry.promote(model_name, v2, "better")
    assert str(registry.champion(model_name).version) == v2

    assert registry.rollback(model_name) == v1
    assert str(registry.champion(model_name).version) == v1
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(model_name)
    assert str(registry.champion(model_name).version) == v1


def test_rollback_without_history_raises_and_changes_nothing(logged_policy, model_name):
    version = _register(logged_policy, model_name)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(model_name)  # never promoted
    registry.promote(model_name, version, "only one")
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(model_name)
    assert str(registry.champion(model_name).version) == version
    with pytest.raises(RegistryError, match="no such registered model"):
        registry.rollback(f"missing-{uuid.uuid4().hex[:8]}")


def test_promote_unknown_version_raises_and_changes_nothing(logged_policy, model_name):
    version = _register(logged_policy, model_name)
    registry.promote(model_name, version, "first")
    client = mlflow.MlflowClient()
    history = client.get_registered_model(model_name).tags["champion_history"]

    with pytest.raises(RegistryError, match=rf"{model_name}.*'99'"):
        registry.promote(model_name, "99", "typo")
    assert str(registry.champion(model_name).version) == version
    assert client.get_registered_model(model_name).tags["champion_history"] == history
    with pytest.raises(RegistryError, match="no such model version"):
        registry.promote(f"missing-{uuid.uuid4().hex[:8]}", "1", "typo")


def test_alias_moved_by_hand_is_kept_in_history(logged_policy, model_name):
    """Rollback goes back to what really served, even if someone moved the alias in the UI."""
    v1 = _register(logged_policy, model_name)
    v2 = _register(logged_policy, model_name)
    v3 = _register(logged_policy, model_name)
    registry.promote(model_name, v1, "first")
    mlflow.MlflowClient().set_registered_model_alias(model_name, "champion", v2)
    registry.promote(model_name, v3, "third")
    assert registry.rollback(model_name) == v2
    assert registry.rollback(model_name) == v1


def test_identical_version_matches_data_params_and_code_of_champion_or_challenger(logged_policy, model_name):
    identity = {"data_version": "d1", "params_sha256": "p1", "code_commit": "c1"}
    assert registry.identical_version(model_name, identity) is None          # no such model yet
    first = registry.register_candidate(logged_policy["model_uri"], model_name, identity, "")
    registry.promote(model_name, first, "test")
    found, alias = registry.identical_version(model_name, identity)
    assert str(found.version) == first and alias == "champion"
    for key in identity:
        assert registry.identical_version(model_name, {**identity, key: "other"}) is None
    second = registry.register_candidate(logged_policy["model_uri"], model_name, {**identity, "code_commit": "c2"}, "")
    found, alias = registry.identical_version(model_name, {**identity, "code_commit": "c2"})
    assert str(found.version) == second and alias == "challenger"


def test_registered_version_is_complete_only_with_its_alias(logged_policy, model_name):
    version = _register(logged_policy, model_name, gate_passed="true")
    tags = mlflow.MlflowClient().get_model_version(model_name, version).tags
    assert tags[registry.REGISTRATION_TAG] == registry.COMPLETE and tags["gate_passed"] == "true"


def test_repair_finishes_or_removes_registrations_a_lost_server_interrupted(logged_policy, model_name):
    client = mlflow.MlflowClient()
    pending = {registry.REGISTRATION_TAG: registry.PENDING, "gate.passed": "true"}
    # interrupted after the alias was set: only the final tag is missing
    aliased = mlflow.register_model(logged_policy["model_uri"], model_name, tags=pending).version
    client.set_registered_model_alias(model_name, registry.CHALLENGER, aliased)
    # interrupted before the alias: a version nobody can tell from a candidate
    orphan = mlflow.register_model(logged_policy["model_uri"], model_name, tags=pending).version

    done = registry.repair_registrations(model_name)
    assert sorted(done) == [f"v{aliased}: registration completed (its alias was set)",
                            f"v{orphan}: deleted (registration interrupted before its alias was set)"]
    versions = {v.version: v.tags for v in client.search_model_versions(f"name = '{model_name}'")}
    assert set(versions) == {aliased}
    assert versions[aliased][registry.REGISTRATION_TAG] == registry.COMPLETE
    assert registry.repair_registrations(model_name) == []


def test_promotion_is_compare_and_set_on_the_champion_the_gate_saw(logged_policy, model_name):
    v1, v2, v3 = (_register(logged_policy, model_name) for _ in range(3))
    registry.promote(model_name, v1, "first")
    with pytest.raises(registry.ChampionMoved, match="is v1, not vNone"):
        registry.promote(model_name, v2, "gated when there was no champion", expected_champion=None)
    assert str(registry.champion(model_name).version) == v1           # nothing changed
    registry.promote(model_name, v2, "gated against v1", expected_champion=v1)
    with pytest.raises(registry.ChampionMoved):
        registry.promote(model_name, v3, "gated against v1, but v2 serves now", expected_champion=v1)
    assert str(registry.champion(model_name).version) == v2
