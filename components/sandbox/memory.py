"""Agents' memories and retrieval by similarity.

A memory is a past (question, answer) with what others said of it: its score (mean rating)
and feedback. Retrieval embeds questions with the offline sentence encoder, or with a lexical
fallback (hashed bag of words) where the encoder is not wanted; either way the nearest past
questions above ``min_similarity`` come back, ties broken by id so that runs repeat exactly.
Entries are embedded in the batches they were added in, so a run resumed from its log
rebuilds bitwise the same vectors.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch

LEXICAL_DIMENSIONS = 4096


@dataclass(frozen=True)
class MemoryEntry:
    id: str
    question: str
    answer: str
    score: float | None = None   # mean rating, or the label's score for labelled memories
    feedback: str = ""


def lexical_embed(texts: list[str]) -> torch.Tensor:
    """Unit vectors of hashed word counts: cosine = shared vocabulary, no model needed."""
    vectors = torch.zeros(len(texts), LEXICAL_DIMENSIONS)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            vectors[row, zlib.crc32(word.encode()) % LEXICAL_DIMENSIONS] += 1.0
    return torch.nn.functional.normalize(vectors, dim=-1)


def embedder(retrieval: str):
    if retrieval == "lexical":
        return lexical_embed
    from components.modeling.sentence_encoder import embed

    return embed


class Memory:
    """An append-only store of entries with vectors of their questions (an agent's memory) or of
    their answers (``by_answer``: a rater's labelled memory, asked "is this answer like one I
    know as bad?"). Vectors are computed when first needed, one batch per ``add``, so a run
    whose rounds are all logged already embeds nothing."""

    def __init__(self, embed, by_answer: bool = False):
        self.embed = embed
        self.by_answer = by_answer
        self.entries: list[MemoryEntry] = []
        self._vectors = torch.zeros(0, 0)
        self._pending: list[list[MemoryEntry]] = []

    def add(self, entries: list[MemoryEntry]) -> None:
        """Add entries, to be embedded as one batch."""
        if entries:
            self.entries.extend(entries)
            self._pending.append(entries)

    @property
    def vectors(self) -> torch.Tensor:
        if self._pending:
            batches = [self.embed([e.answer if self.by_answer else e.question for e in b]) for b in self._pending]
            self._vectors = torch.cat(([self._vectors] if self._vectors.numel() else []) + batches)
            self._pending = []
        return self._vectors

    def nearest(self, query: torch.Tensor, k: int, min_similarity: float = -1.0) -> list[tuple[MemoryEntry, float]]:
        """The ``k`` entries nearest to one query vector, at least ``min_similarity`` close."""
        if not self.entries or k <= 0:
            return []
        similarity = (self.vectors @ query).tolist()
        ranked = sorted(range(len(self.entries)), key=lambda i: (-round(similarity[i], 6), self.entries[i].id))
        return [(self.entries[i], similarity[i]) for i in ranked[:k] if similarity[i] >= min_similarity]
