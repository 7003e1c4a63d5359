"""Ratings on the 1..7 scale as distributions, never parsed from free text.

A language model's rating is its distribution over the digits 1..7 as the first thing it says
after a rating prompt ("5", " 5", or a space and then "5", however the tokenizer spells it),
renormalised over the seven:
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


@dataclass(frozen=True)
class DigitSpellings:
    """How a tokenizer can start an answer with each digit: the digit's own token, the digit
    with a leading space as one token, and the space token (digit after it, e.g. Llama's "▁", "5")."""

    plain: list[int | None]
    spaced: list[int | None]
    space: int | None

    @classmethod
    def of(cls, tokenizer) -> "DigitSpellings":
        def single(text: str) -> int | None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids[0] if len(ids) == 1 else None

        found = cls([single(str(d)) for d in SCALE], [single(f" {d}") for d in SCALE], single(" "))
        for digit, plain, spaced in zip(SCALE, found.plain, found.spaced):
            if plain is None and spaced is None:
                raise ValueError(f"the tokenizer has no single token for the digit {digit}: it cannot rate on 1..7")
        return found


def digit_logps(first: torch.Tensor, spellings: DigitSpellings, after_space: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, 7]`` log-probabilities that an answer starts with each digit, summed over its
    spellings: ``first`` are next-token log-probs ``[N, V]``; ``after_space`` the log-probs after
    the space token (when the tokenizer has one), for digits written as space, then digit."""
    columns = []
    for plain, spaced in zip(spellings.plain, spellings.spaced):
        terms = [first[:, i] for i in (plain, spaced) if i is not None]
        if plain is not None and spellings.space is not None and after_space is not None:
            terms.append(first[:, spellings.space] + after_space[:, plain])
        columns.append(torch.logsumexp(torch.stack(terms, dim=-1), dim=-1))
    return torch.stack(columns, dim=-1)


def from_digit_logps(per_digit: torch.Tensor) -> list[Rating]:
    """Ratings from ``[N, 7]`` digit log-probabilities, renormalised over the seven digits."""
    return [from_probabilities(row) for row in torch.softmax(per_digit.double(), dim=-1)]


def from_top_logprobs(top: dict[str, float]) -> Rating | None:
    """A rating from an OpenAI-style ``top_logprobs`` entry (token text → log-prob); None when
    no digit 1..7 is among them (the caller names the backend and fails: never a sentinel)."""
    weights = torch.zeros(len(SCALE), dtype=torch.float64)
    for token, logprob in top.items():
        if token.strip() in {str(d) for d in SCALE}:
            weights[int(token.strip()) - 1] += math.exp(logprob)
    return from_probabilities(weights) if weights.sum() > 0 else None
