"""Personal adapters: LoRA (PEFT) on top of the base model, one per deployer and per user.

A deployer's adapter sits on the base; a user's sits on the base with their deployer's adapter
merged in, so that it learns inside its deployer's bounds. Composing is merging: each adapter's
low-rank update is added to the weights beneath it (``merge_and_unload``), which is exact and
leaves a plain model that generates as fast as the base. Adapters are saved adapter-only, as
safetensors; the base weights are never copied.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from peft import LoraConfig, PeftModel, get_peft_model

from components.params import Params
from components.training.anchors import sample_anchors
from components.training.companions import with_pair_anchors
from components.training.negatives import encode_negatives, relearn_examples
from components.training.relearn import relearn
from components.training.step_log import StepLog

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def compose(model, adapter_dirs: list[Path]):
    """``model`` with each adapter merged in, in order (a deployer's before its user's). Merges
    into ``model``'s own weights: pass a freshly loaded model, not one still in use."""
    for adapter_dir in adapter_dirs:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return model.eval()


def train_adapter(parent, tokenizer, train: pd.DataFrame, params: Params, seed: int,
                  step_log: StepLog | None = None) -> tuple[PeftModel, dict]:
    """A fresh LoRA adapter on ``parent`` (the model it will sit on; the adapter's layers are
    added to it in place), trained on the owner's ``train`` rows with ``tiers.relearn``; D2O's
    anchors are sampled from ``parent``, or with ``tiers.pair_anchors`` are a negative's own
    pair's positive where the owner gave one. The adapter's initial weights come from the global
    random state: seed before calling (``train_and_gate`` does), or two runs differ.

    Returns the PEFT model (adapter on; ``disable_adapter()`` gives ``parent`` back) and
    figures: loss, seconds, trainable parameters and their share of the parent's."""
    started = time.perf_counter()
    settings, seq = params.tiers.relearn, params.sequence
    for parameter in parent.parameters():
        parameter.requires_grad_(False)
    negatives = encode_negatives(parent, tokenizer, train, settings, seq, seed)
    anchors = None
    if settings.objective == "d2o":
        anchors = sample_anchors(parent, parent, tokenizer, negatives.prompts, params.cycles.anchors, seed)
    examples = relearn_examples(negatives, settings, parent, tokenizer, train, seq, seed, anchors,
                                params.cycles.anchors.drop_pattern)
    if settings.objective == "d2o" and params.tiers.pair_anchors:
        examples = with_pair_anchors(examples, negatives.rows, train, parent, tokenizer, seq.max_response_tokens)
    lora = params.tiers.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, lora_dropout=0.0,
                        task_type="CAUSAL_LM")
    total = sum(p.numel() for p in parent.parameters())
    model = get_peft_model(parent, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loss = relearn(model, tokenizer, examples, settings, seed, callbacks=[step_log] if step_log else None)
    return model, {**loss, "train_negatives": len(examples), "adapter_parameters": trainable,
                   "adapter_share": trainable / total, "train_seconds": round(time.perf_counter() - started, 2)}


def save_adapter(model: PeftModel, out_dir: Path) -> Path:
    """Adapter weights and config only (``adapter_model.safetensors``, ``adapter_config.json``)."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir
