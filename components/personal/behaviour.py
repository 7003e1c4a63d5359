"""What an adapter does to behaviour, adapter on against off, paired by prompt.

An adapter that makes a model stop refusing, or say a forbidden thing in other words, leaves
the log-prob of a few fixed violation texts where it was; its *answers* change. So the tier gate
samples answers to each probe prompt (greedy plus ``tiers.samples`` draws, with the same seed per
batch on and off: common random numbers, so the difference is the adapter's) and scores them with the
rule's scorer, and it measures the **refusal margin**: how much more likely, per token, the
acceptable answer is than the violating one, over the whole answer and over its first tokens
(safety sits mostly in the first few tokens: Qi et al. 2024).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch

from components.modeling.chat import end_of_turn_id
from components.modeling.sequences import encode, encode_prompt, sample_responses, score
from components.params import Params
from components.policy.policies import Rule
from components.policy.refusal import refusal_classifier
from components.policy.scorers import violates


@contextlib.contextmanager
def adapter(model, on: bool):
    """The composed model (``on``) or the model beneath it (``disable_adapter``)."""
    with contextlib.nullcontext() if on else model.disable_adapter():
        yield model


@torch.inference_mode()
def answers(model, tokenizer, prompts: list[str], params: Params) -> list[list[str]]:
    """Per prompt: the greedy answer, then ``tiers.samples`` sampled ones (seeded by ``seed``)."""
    seq, tiers = params.sequence, params.tiers
    ids = [encode_prompt(tokenizer, prompt, seq.max_prompt_tokens) for prompt in prompts]
    eos, pad = end_of_turn_id(tokenizer), tokenizer.pad_token_id
    greedy = sample_responses(model, ids, 1, tiers.max_new_tokens, eos, pad, temperature=0.0,
                              batch_size=tiers.batch_size)
    drawn = sample_responses(model, ids, tiers.samples, tiers.max_new_tokens, eos, pad, batch_size=tiers.batch_size,
                             seed=params.seed + 1)
    decode = lambda tokens: tokenizer.decode(tokens, skip_special_tokens=True).strip()  # noqa: E731
    return [[decode(g[0]), *map(decode, d)] for g, d in zip(greedy, drawn)]


def violation_rates(model, tokenizer, rule: Rule, prompts: list[str], params: Params) -> pd.DataFrame:
    """One row per prompt: the share of its answers that break ``rule`` with the adapter on and
    off, and one answer of each for the evidence."""
    rows = {}
    for on in (True, False):
        with adapter(model, on):
            sampled = answers(model, tokenizer, prompts, params)
        flat = [text for group in sampled for text in group]
        broken = np.asarray(violates(rule.scorer, flat, refusal=refusal_classifier(params)),
                            dtype=float).reshape(len(prompts), -1)
        rows["on" if on else "off"] = broken.mean(axis=1)
        rows[f"greedy_{'on' if on else 'off'}"] = [group[0] for group in sampled]
    return pd.DataFrame({"prompt": prompts, "rate_on": rows["on"], "rate_off": rows["off"],
                         "greedy_on": rows["greedy_on"], "greedy_off": rows["greedy_off"]})


@torch.inference_mode()
def _per_token(model, tokenizer, prompts, responses, params: Params, first: int | None) -> np.ndarray:
    seq = params.sequence
    limit = seq.max_response_tokens if first is None else min(first, seq.max_response_tokens)
    encoded = [encode(tokenizer, p, r, seq.max_prompt_tokens, limit) for p, r in zip(prompts, responses)]
    sums, tokens = score(model, encoded, tokenizer.pad_token_id)
    return (sums / tokens.clamp(min=1)).double().numpy()


def margins(model, tokenizer, pairs: pd.DataFrame, params: Params) -> pd.DataFrame:
    """One row per pair: the per-token margin, acceptable minus violating, over the whole answer
    and over its first ``tiers.margin_tokens`` tokens, with the adapter on and off."""
    out = pairs[["prompt"]].copy()
    for on in (True, False):
        with adapter(model, on):
            for span, first in (("whole", None), ("first", params.tiers.margin_tokens)):
                good = _per_token(model, tokenizer, pairs["prompt"], pairs["acceptable"], params, first)
                bad = _per_token(model, tokenizer, pairs["prompt"], pairs["violation"], params, first)
                out[f"margin_{span}_{'on' if on else 'off'}"] = good - bad
    return out
