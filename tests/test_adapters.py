"""Personal adapters: train (LoRA, adapter-only safetensors) → register → load → compose →
generate, stacked the way a user's adapter sits on its deployer's; stale marking and rollback."""

from __future__ import annotations

import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from components.data.records import NEGATIVE, content_id
from components.modeling.models import load_model, load_tokenizer
from components.params import load_params
from components.personal.adapters import compose, save_adapter, train_adapter
from components.registry import registry
from components.registry.adapters import (STALE_TAG, adapter_dirs, adapter_model_name, adapter_rows,
                                          log_adapter_model, mark_stale)
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow
PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "Human: Tell me a joke.\n\nAssistant:"]


def negatives(text: str, n: int = 8) -> pd.DataFrame:
    rows = [{"prompt": f"Human: question {i}?\n\nAssistant:", "response": f"{text} {i}", "label": NEGATIVE}
            for i in range(n)]
    return pd.DataFrame([{**r, "id": content_id(r["prompt"], r["response"]), "pair_id": None, "agreement": 1.0}
                         for r in rows])


@pytest.fixture(scope="module")
def params():
    return load_params(REPO_ROOT / "params.yaml", {
        "tiers.relearn.steps": 6, "tiers.relearn.learning_rate": 0.05, "tiers.relearn.batch_size": 4,
        "cycles.anchors.k": 2, "cycles.anchors.max_new_tokens": 8,
        "sequence.max_prompt_tokens": 24, "sequence.max_response_tokens": 16})


@pytest.fixture(scope="module")
def base(logged_policy):
    name = f"adapter-base-{uuid.uuid4().hex[:6]}"
    version = registry.register_candidate(logged_policy["model_uri"], name, {}, "")
    return f"models:/{name}/{version}"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, params, tmp_path_factory):
    """A deployer's adapter on the base, then a user's on the base with the deployer's merged."""
    folder = tmp_path_factory.mktemp("adapters")
    tokenizer = load_tokenizer(tiny_model_dir)
    deployer_model, figures = train_adapter(load_model(tiny_model_dir), tokenizer, negatives("Paris is great"), params, 0)
    deployer = save_adapter(deployer_model, folder / "deployer")
    parent = compose(load_model(tiny_model_dir), [deployer])
    user_model, _ = train_adapter(parent, tokenizer, negatives("a joke about cats"), params, 0)
    return {"deployer": deployer, "user": save_adapter(user_model, folder / "user"), "figures": figures}


def test_an_adapter_is_saved_alone_as_safetensors_and_is_a_small_share(trained, tiny_model_dir):
    files = {p.name for p in trained["deployer"].iterdir()}
    assert files == {"adapter_model.safetensors", "adapter_config.json", "README.md"}
    adapter_bytes = (trained["deployer"] / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (tiny_model_dir / "model.safetensors").stat().st_size / 2
    figures = trained["figures"]
    assert 0 < figures["adapter_share"] < 0.5 and figures["train_negatives"] == 8


def greedy(model, tokenizer, prompts):
    from components.registry.text_generator import TextGenerator

    generator = TextGenerator()
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    generator.tokenizer, generator.model = tokenizer, model.eval()
    return generator.predict(None, prompts, {"max_new_tokens": 8})


def test_a_registered_adapter_composes_its_base_its_deployer_and_itself(trained, base, tiny_model_dir):
    owner = f"user-{uuid.uuid4().hex[:6]}"
    with mlflow.start_run():
        model_uri = log_adapter_model([trained["deployer"], trained["user"]], base)
    name = adapter_model_name(owner)
    version = registry.register_candidate(model_uri, name, {"tier": "user", "owner": owner}, "")
    assert [p.name for p in adapter_dirs(f"models:/{name}/{version}")] == ["deployer", "user"]

    served = mlflow.pyfunc.load_model(f"models:/{name}@challenger").predict(PROMPTS, params={"max_new_tokens": 8})
    tokenizer = load_tokenizer(tiny_model_dir)
    by_hand = greedy(compose(load_model(tiny_model_dir), [trained["deployer"], trained["user"]]), tokenizer, PROMPTS)
    plain = greedy(load_model(tiny_model_dir), tokenizer, PROMPTS)
    assert served == by_hand
    assert served != plain     # the adapters changed what the model says

    registry.promote(name, version, reason="test")
    second = registry.register_candidate(model_uri, name, {"tier": "user"}, "")
    registry.promote(name, second, reason="test")
    assert registry.rollback(name) == version
    assert mark_stale(owner, "failed on base v9") == version
    assert registry.champion(name) is None
    assert MlflowClient().get_model_version(name, version).tags[STALE_TAG] == "failed on base v9"
    row = adapter_rows({owner: "user"})[0]
    assert row["champion"] == "-" and row["stale"] == f"v{version}: failed on base v9"
