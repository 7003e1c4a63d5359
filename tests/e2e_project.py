"""Throwaway alignpipe projects for the end-to-end tests: the repo's stage graph and code, the
planted data, the smallest configuration that still proves a point, a git repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO_ROOT
from planted_data import write_planted

BIN = Path(sys.executable).parent
# Everything the tests depend on is pinned here, not inherited from the repo's params.yaml, whose
# defaults are tuned for the bundled data and may change: the seed, the share of bad rows
# quarantine tolerates (1%), the reference (the tiny default itself, tokenizer and SFT from the
# data, shrunk to train in seconds), how negatives are sampled, the bootstrap, and the group gate
# (the planted `group` column, reported per group, not a veto).
SMALLEST = {
    "seed": 0,
    "data": {"source": "data/planted.jsonl", "dev_fraction": 0.15, "test_fraction": 0.2, "owner_source": ""},
    "validation": {"max_bad_fraction": 0.01},
    "reference": {"model": "tiny", "vocab_size": 400, "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2},
                  "sft": {"steps": 12, "batch_size": 8, "learning_rate": 2.0e-3, "warmup_steps": 20}},
    "sequence": {"max_prompt_tokens": 24, "max_response_tokens": 24},
    "cycles": {"count": 1, "anchors": {"k": 2, "max_new_tokens": 12},
               "relearn": {"objective": "d2o", "steps": 4, "batch_size": 8, "learning_rate": 5.0e-4, "max_prompts": 64,
                           "balance": "none"}},
    "evaluate": {"kl_prompts": 4, "max_new_tokens": 8},
    "gate": {"min_pairs": 40, "bootstrap_samples": 2000, "groups": {"by": "group", "rule": "pooled", "min_pairs": 15}},
}
GIT = ["git", "-c", "user.name=alignpipe tests", "-c", "user.email=tests@alignpipe.invalid"]


def merge(base: dict, override: dict) -> dict:
    return {k: merge(base.get(k, {}), v) if isinstance(v, dict) else v for k, v in override.items()} | \
        {k: v for k, v in base.items() if k not in override}


def set_params(project: Path, dotted: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in dotted.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def make_project(root: Path, params: dict) -> Path:
    """``root`` as a git + DVC project whose params.yaml is the repo's merged with ``params``."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "policies.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    shutil.copy(REPO_ROOT / "data" / "withdrawals.txt", root / "data" / "withdrawals.txt")
    # bundled data that policies.yaml and the repo's params name (probe sets, the refusal classifier)
    shutil.copytree(REPO_ROOT / "data" / "xstest", root / "data" / "xstest")
    write_planted(root / "data" / "planted.jsonl")
    (root / "params.yaml").write_text(yaml.safe_dump(merge(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), params)))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    return root


def alignpipe(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The command as a user types it in ``project``."""
    return subprocess.run([str(BIN / "alignpipe"), *args], cwd=project, capture_output=True, text=True, env=env)


def commit(project: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", message], cwd=project, check=True)


def save_tiny_reference(folder: Path, texts: list[str], sft_steps: int, vocab_size: int = 400) -> Path:
    """A local Hugging Face model folder, as a team would point ``reference.model`` at."""
    import torch

    from components.modeling.models import build_tiny_model, save_model
    from components.modeling.sequences import Encoded
    from components.modeling.tokenizer import train_bpe_tokenizer
    from components.training.sft import supervised_finetune

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer(texts, vocab_size)
    model = build_tiny_model(tokenizer, n_layer=1, n_embd=48, n_head=2, n_positions=64)
    if sft_steps:
        sequences = [Encoded([], tokenizer(t)["input_ids"][:48] + [tokenizer.eos_token_id]) for t in texts]
        supervised_finetune(model, tokenizer, sequences, sft_steps, 16, 3e-3, 5, seed=0)
    return save_model(model, tokenizer, folder)


def texts(rows: list[dict]) -> list[str]:
    return [f"{row['prompt']} {row['response']}" for row in rows]
