"""Who rates: a language model (its digit distribution, feedback it writes) or a memory.

The memory rater scores an answer by its nearest labelled memories (answers known as bad or
good, e.g. HH-RLHF's rejected and chosen responses): each neighbour's score spread by a
Gaussian kernel over 1..7, weighted by similarity. Tiny CPU models cannot judge anything;
with this rater a CPU-scale run still yields ratings that mean something, with a spread
(entropy) that says how sure it is.
"""

from __future__ import annotations

import torch

from components.sandbox.backends import Backend
from components.sandbox.memory import Memory, MemoryEntry
from components.sandbox.prompts import feedback_chat, rate_chat
from components.sandbox.ratings import Rating, from_probabilities

KERNEL_WIDTH = 1.5      # in score points
NEIGHBOURS = 8
TEMPERATURE = 0.05      # similarity → weight sharpness


class LMRater:
    """A backend asked to rate (one forward pass for all answers) and to say why (one batched generate)."""

    def __init__(self, backend: Backend, name: str, max_new_tokens: int = 32):
        self.backend, self.name, self.max_new_tokens = backend, name, max_new_tokens
        self.version = backend.version

    def rate(self, questions: list[str], answers: list[str]) -> list[Rating]:
        return self.backend.rate([rate_chat(q, a) for q, a in zip(questions, answers)])

    def feedback(self, questions: list[str], answers: list[str], ratings: list[Rating], seed: int) -> list[str]:
        chats = [feedback_chat(q, a, r.score) for q, a, r in zip(questions, answers, ratings)]
        return self.backend.generate(chats, self.max_new_tokens, 1.0, seed)


class MemoryRater:
    def __init__(self, memory: Memory, name: str):
        self.memory, self.name = memory, name
        self.version = f"memory:{len(memory.entries)} labelled answers"

    def _neighbours(self, answers: list[str]) -> list[list[tuple[MemoryEntry, float]]]:
        vectors = self.memory.embed(answers)
        return [self.memory.nearest(vector, NEIGHBOURS) for vector in vectors]

    def rate(self, questions: list[str], answers: list[str]) -> list[Rating]:
        scale = torch.arange(1, 8, dtype=torch.float64)
        ratings = []
        for neighbours in self._neighbours(answers):
            similarity = torch.tensor([s for _, s in neighbours], dtype=torch.float64)
            weights = torch.softmax(similarity / TEMPERATURE, dim=0)
            scores = torch.tensor([entry.score for entry, _ in neighbours], dtype=torch.float64)
            kernel = torch.exp(-((scale[None, :] - scores[:, None]) ** 2) / (2 * KERNEL_WIDTH ** 2))
            kernel = kernel / kernel.sum(dim=1, keepdim=True)
            ratings.append(from_probabilities((weights[:, None] * kernel).sum(0)))
        return ratings

    def feedback(self, questions: list[str], answers: list[str], ratings: list[Rating], seed: int) -> list[str]:
        lines = []
        for neighbours, rating in zip(self._neighbours(answers), ratings):
            entry, similarity = neighbours[0]
            snippet = " ".join(entry.answer.split()[:12])
            lines.append(f"{rating.score}/7: closest to an answer I know as {entry.score:g}/7 "
                         f"(similarity {similarity:.2f}): \"{snippet}\"")
        return lines
