"""Held-out signals of METHODS.md §7, for a policy against its frozen reference.

Log-prob metrics (``neg_logp_delta``, ``pos_logp_delta``, ``pref_accuracy``) need only
forward passes; generation metrics (``kl_ref``, ``distinct_2``) sample continuations from
the policy. Reference scores can be computed once and reused across cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from components.modeling.chat import end_of_turn_id
from components.modeling.sequences import SequenceBatch, collate, encode, encode_prompt, sample_responses, score, Encoded
from components.params import EvaluateParams, SequenceParams

TIE_TOLERANCE = 1e-5


@dataclass
class PairScores:
    """Summed response log-probs and token counts for the chosen and rejected side of each pair."""

    chosen: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected: torch.Tensor
    rejected_tokens: torch.Tensor


def encode_pairs(tokenizer, pairs: pd.DataFrame, seq: SequenceParams) -> tuple[list[Encoded], list[Encoded]]:
    chosen = [encode(tokenizer, p, r, seq.max_prompt_tokens, seq.max_response_tokens)
              for p, r in zip(pairs["prompt"], pairs["chosen"])]
    rejected = [encode(tokenizer, p, r, seq.max_prompt_tokens, seq.max_response_tokens)
                for p, r in zip(pairs["prompt"], pairs["rejected"])]
    return chosen, rejected


def score_pairs(model, tokenizer, pairs: pd.DataFrame, seq: SequenceParams) -> PairScores:
    chosen, rejected = encode_pairs(tokenizer, pairs, seq)
    return PairScores(*score(model, chosen, tokenizer.pad_token_id), *score(model, rejected, tokenizer.pad_token_id))


def per_pair_values(policy: PairScores, reference: PairScores) -> dict[str, torch.Tensor]:
    """Per pair: per-token log-prob change of each side (policy minus reference), their
    difference (*separation*), the implicit-reward margin and a win (1), tie (0.5) or loss (0)
    of chosen over rejected. Ties, as at the reference itself, count half."""
    chosen_reward = policy.chosen - reference.chosen
    rejected_reward = policy.rejected - reference.rejected
    margin = chosen_reward - rejected_reward
    pos = chosen_reward / policy.chosen_tokens.clamp(min=1)
    neg = rejected_reward / policy.rejected_tokens.clamp(min=1)
    return {
        "pos_logp_delta": pos,
        "neg_logp_delta": neg,
        "separation": pos - neg,
        "reward_margin": margin,
        "pref_accuracy": (margin > TIE_TOLERANCE).float() + 0.5 * (margin.abs() <= TIE_TOLERANCE).float(),
    }


EVIDENCE_KEYS = ("pair_id", "prompt_id", "source", "annotator", "policy_tier", "group")


def pair_evidence(policy: PairScores, reference: PairScores, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: its ids and group columns (those ``pairs`` has), token counts and
    :func:`per_pair_values`. Saved as Parquet so a person can recompute every decision."""
    keys = [column for column in EVIDENCE_KEYS if column in pairs.columns]
    evidence = pairs[keys].reset_index(drop=True).copy()
    evidence["chosen_tokens"] = policy.chosen_tokens.numpy()
    evidence["rejected_tokens"] = policy.rejected_tokens.numpy()
    # where each side started: the reference's per-token log-prob (the "before" of the plots)
    evidence["ref_pos_logp"] = (reference.chosen / reference.chosen_tokens.clamp(min=1)).double().numpy()
    evidence["ref_neg_logp"] = (reference.rejected / reference.rejected_tokens.clamp(min=1)).double().numpy()
    for name, values in per_pair_values(policy, reference).items():
        evidence[name] = values.double().numpy()
    return evidence


def mean_token_logp_delta(model, sequences: list[Encoded], ref_sums: torch.Tensor, pad_id: int) -> float:
    """Mean over sequences of the per-token log-prob change against the reference's summed
    log-probs ``ref_sums`` (Δ_neg when the sequences are negatives)."""
    sums, counts = score(model, sequences, pad_id)
    return float(((sums - ref_sums) / counts.clamp(min=1)).mean())


@torch.inference_mode()
def generation_metrics(policy, reference, tokenizer, prompts: list[str], seq: SequenceParams,
                       max_new_tokens: int, seed: int) -> dict[str, float]:
    """Per-token KL(π_θ‖π_ref) over the full vocabulary along continuations sampled from the
    policy, and distinct-2 (unique word bigrams / all bigrams) of those continuations."""
    torch.manual_seed(seed)
    prompt_ids = [encode_prompt(tokenizer, p, seq.max_prompt_tokens) for p in prompts]
    samples = sample_responses(policy, prompt_ids, 1, max_new_tokens, end_of_turn_id(tokenizer), tokenizer.pad_token_id)
    sequences = [Encoded(p, s[0]) for p, s in zip(prompt_ids, samples) if s[0]]
    kl_sum, kl_tokens = 0.0, 0
    for start in range(0, len(sequences), 16):
        batch = collate(sequences[start : start + 16], tokenizer.pad_token_id)
        kl, n = _token_kl(policy, reference, batch)
        kl_sum, kl_tokens = kl_sum + kl, kl_tokens + n
    texts = [tokenizer.decode(s[0], skip_special_tokens=True) for s in samples]
    return {"kl_ref": kl_sum / max(kl_tokens, 1), "distinct_2": distinct_n(texts, 2)}


def _token_kl(policy, reference, batch: SequenceBatch) -> tuple[float, int]:
    batch = batch.to(policy.device)
    policy_logp = F.log_softmax(policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float(), -1)
    ref_logp = F.log_softmax(reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float(), -1)
    kl = (policy_logp.exp() * (policy_logp - ref_logp)).sum(-1)
    mask = batch.response_mask[:, 1:]
    return float((kl * mask).sum()), int(mask.sum())


def distinct_n(texts: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def evaluate_policy(policy, reference, tokenizer, pairs: pd.DataFrame, seq: SequenceParams,
                    params: EvaluateParams, seed: int, generation: bool = True) -> tuple[dict[str, float], pd.DataFrame]:
    """Per-pair log-prob evidence of ``policy`` on (prompt, chosen, rejected) ``pairs`` and,
    unless ``generation`` is off, its sampling metrics on the first ``kl_prompts`` prompts."""
    if pairs.empty:
        raise ValueError("no evaluation pairs: the held-out split holds no (chosen, rejected) pair")
    evidence = pair_evidence(score_pairs(policy, tokenizer, pairs, seq), score_pairs(reference, tokenizer, pairs, seq),
                             pairs)
    if not generation:
        return {}, evidence
    prompts = list(pairs["prompt"].head(params.kl_prompts))
    return generation_metrics(policy, reference, tokenizer, prompts, seq, params.max_new_tokens, seed), evidence
