"""Shared fixtures: isolated state per test session, tiny saved models to load, and (from
``shared_prefect`` and ``trained_project``) what the end-to-end tests share."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

# Isolate every test session's MLflow/Prefect state before `components` applies its defaults.
_STATE = Path(tempfile.mkdtemp(prefix="alignpipe-test-state-"))
os.environ["ALIGNPIPE_HOME"] = str(_STATE)
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_STATE / 'mlflow.db'}"
# A fixed pseudonym salt: tests never create or read the salt file in the home folder.
os.environ["ALIGNPIPE_PSEUDONYM_SALT"] = "alignpipe-tests-only"

import components  # noqa: E402,F401  (applies the quiet/offline defaults)

# session-wide fixtures of the end-to-end tests: one Prefect server, one trained project
pytest_plugins = ["shared_prefect", "trained_project"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "data" / "sample" / "hh-rlhf-harmless-base.sample.jsonl.gz"

TINY_TEXTS = [
    "Human: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt, knead, let it rise, then bake.",
    "Human: Tell me something mean.\n\nAssistant: I would rather not insult anyone.",
    "Human: What is the capital of France?\n\nAssistant: Paris is the capital of France.",
] * 20


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(module, argv: list[str]) -> tuple[str, dict]:
    """What ``module.main(argv)`` printed and its last line (the JSON summary); it must return 0.
    The working directory is restored (a benchmark may work from the project folder)."""
    import contextlib
    import io
    import json

    printed, cwd = io.StringIO(), os.getcwd()
    try:
        with contextlib.redirect_stdout(printed):
            assert module.main(argv) == 0
    finally:
        os.chdir(cwd)
    return printed.getvalue(), json.loads(printed.getvalue().strip().splitlines()[-1])


def write_params(directory: Path, overrides: dict | None = None) -> Path:
    """The repo's params.yaml with dotted-key overrides (``{"validation.min_rows": 4}``), written
    to ``directory``; relative paths in it (data.withdrawals) still resolve from the repo root,
    policies.yaml from anywhere. No owner feedback unless a test names it (data.owner_source)."""
    import yaml

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["tiers"]["policies"] = str(REPO_ROOT / "policies.yaml")
    params["data"]["owner_source"] = ""
    for dotted, value in (overrides or {}).items():
        node = params
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, dotted
        node[leaf] = value
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A GPT-2-shaped model with a locally trained tokenizer, saved as safetensors."""
    import torch

    from components.modeling.models import build_tiny_model, save_model
    from components.modeling.tokenizer import train_bpe_tokenizer

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer(TINY_TEXTS, vocab_size=300)
    model = build_tiny_model(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=128)
    return save_model(model, tokenizer, tmp_path_factory.mktemp("tiny-model"))


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="session")
def templated_model_dir(tmp_path_factory) -> Path:
    """An instruction model in miniature: a tokenizer with a chat template whose markers are
    special tokens, the end-of-turn token in the generation config (as real instruct models
    ship it), and a few SFT steps on TINY_TEXTS rendered through the template, so that it
    answers "What is the capital of France?" with "Paris is the capital of France." """
    import torch

    from components.modeling.chat import end_of_turn_id
    from components.modeling.models import build_tiny_model, save_model
    from components.modeling.sequences import encode
    from components.modeling.tokenizer import train_bpe_tokenizer
    from components.training.sft import supervised_finetune

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer(TINY_TEXTS, vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_tiny_model(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=128)
    dialogues = [text.rsplit("\n\nAssistant: ", 1) for text in TINY_TEXTS]
    sequences = [encode(tokenizer, prompt + "\n\nAssistant:", answer, 64, 32) for prompt, answer in dialogues]
    supervised_finetune(model, tokenizer, sequences, 60, 16, 3e-3, 5, seed=0)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return save_model(model, tokenizer, tmp_path_factory.mktemp("templated-model"))


@pytest.fixture(scope="session")
def model_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """The GPT-2 above, plus a Llama and a Qwen2 of the same size built from configs and saved the same way."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from components.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    dirs = {"gpt2": tiny_model_dir}
    for name, config_class in {"llama": LlamaConfig, "qwen2": Qwen2Config}.items():
        config = config_class(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        dirs[name] = tmp_path_factory.mktemp(f"tiny-{name}")
        AutoModelForCausalLM.from_config(config).save_pretrained(dirs[name])
        tokenizer.save_pretrained(dirs[name])
    return dirs


@pytest.fixture(scope="session")
def logged_policy(tiny_model_dir) -> dict:
    """The tiny model logged once per session as a models-from-code pyfunc; register it
    under a fresh ``model_name`` with ``registry.register_candidate(logged_policy["model_uri"], ...)``."""
    import mlflow

    from components.registry import registry, tracking

    tracking.ensure_experiment("test-registry")
    with mlflow.start_run() as run:
        model_uri = registry.log_policy_model(tiny_model_dir)
    return {"model_uri": model_uri, "run_id": run.info.run_id}


@pytest.fixture
def model_name() -> str:
    """A registered-model name of its own for each test, so registry tests stay independent."""
    return f"policy-{uuid.uuid4().hex[:8]}"
