"""Ratings on the 1..7 scale as distributions, never parsed from free text.

A language model's rating is its next-token distribution over the digits 1..7 after a rating
prompt (both "5" and " 5" count where the tokenizer has them), renormalised over the seven:
the expected score and the entropy come with it, and there is no reply that fails to parse.
The official sandbox parsed free text and let unparseable replies become an "8" in the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCALE = tuple(range(1, 8))
MAX_ENTROPY = math.log(len(SCALE))


@dataclass(frozen=True)
class Rating:
    score: int         # the expected score rounded to the nearest digit (halves up)
    expected: float    # Σ s·p(s)
    entropy: float     # nats, 0 (certain) .. ln 7 (uniform)

    def as_dict(self) -> dict:
        return {"score": self.score, "expected": self.expected, "entropy": self.entropy}


def from_probabilities(probabilities: torch.Tensor) -> Rating:
    """A rating from 7 non-negative weights (normalised here)."""
    p = probabilities.double().clamp(min=0)
    p = p / p.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    expected = float((p * torch.arange(1, 8, dtype=torch.float64)).sum())
    # rounding, not the most probable digit: a rater split between 1 and 7 says 4, not 7
    return Rating(min(7, max(1, math.floor(expected + 0.5))), round(expected, 6), round(max(entropy, 0.0), 6))


def digit_token_ids(tokenizer) -> list[list[int]]:
    """For each digit 1..7, the single tokens that spell it ("5", " 5"); a tokenizer that spells a
    digit with none cannot rate, and says so."""
    ids = []
    for digit in SCALE:
        found = sorted({tokens[0] for text in (str(digit), f" {digit}")
                        if len(tokens := tokenizer(text, add_special_tokens=False)["input_ids"]) == 1})
        if not found:
            raise ValueError(f"the tokenizer has no single token for the digit {digit}: it cannot rate on 1..7")
        ids.append(found)
    return ids


def from_logits(logits: torch.Tensor, digit_ids: list[list[int]]) -> list[Rating]:
    """Ratings from next-token logits ``[N, V]``: each digit's probability (summed over its
    spellings), renormalised over the seven digits."""
    logps = torch.log_softmax(logits.float(), dim=-1)
    per_digit = torch.stack([torch.logsumexp(logps[:, ids], dim=-1) for ids in digit_ids], dim=-1)
    return [from_probabilities(row) for row in torch.softmax(per_digit, dim=-1)]


def from_top_logprobs(top: dict[str, float]) -> Rating | None:
    """A rating from an OpenAI-style ``top_logprobs`` entry (token text → log-prob); None when
    no digit 1..7 is among them (the caller names the backend and fails: never a sentinel)."""
    weights = torch.zeros(len(SCALE), dtype=torch.float64)
    for token, logprob in top.items():
        if token.strip() in {str(d) for d in SCALE}:
            weights[int(token.strip()) - 1] += math.exp(logprob)
    return from_probabilities(weights) if weights.sum() > 0 else None
