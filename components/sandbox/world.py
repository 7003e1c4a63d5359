"""The sandbox's world: agents on a seeded grid, their neighbours, and what they start knowing.

Agents sit on distinct cells of a ``grid × grid`` square; an agent's raters are its nearest
neighbours within ``radius`` (Chebyshev distance, ties by id). Questions and starting memories
come from HH-RLHF-shaped sources: single-turn prompts are the question pool; pairs give each
agent remembered answers (chosen ones for personas at even positions of ``sandbox.personas``,
rejected ones for the others, the paper's good/bad mix) and each memory rater answers
labelled 7 (chosen) and 1 (rejected).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from components.data.readers import read_source
from components.data.records import ASSISTANT, HUMAN, content_id, pairs, to_frame
from components.errors import UserError
from components.params import SandboxParams
from components.sandbox.memory import MemoryEntry

GOOD_SCORE, BAD_SCORE = 7.0, 1.0


class SandboxError(UserError, ValueError):
    """The sandbox's settings cannot make a world."""


@dataclass(frozen=True)
class Agent:
    id: str
    position: tuple[int, int]
    persona: int          # index into sandbox.personas


@dataclass(frozen=True)
class Question:
    id: str
    text: str


def place_agents(settings: SandboxParams, seed: int) -> list[Agent]:
    if not settings.personas:
        raise SandboxError("sandbox.personas: give at least one persona (a system text)")
    if not 2 <= settings.agents <= settings.grid ** 2:
        raise SandboxError(f"sandbox.agents: {settings.agents} agents need 2 .. grid² = {settings.grid ** 2} cells")
    cells = random.Random(seed).sample([(x, y) for x in range(settings.grid) for y in range(settings.grid)], settings.agents)
    return [Agent(f"agent-{i:02d}", cell, i % len(settings.personas)) for i, cell in enumerate(cells)]


def raters_of(agent: Agent, agents: list[Agent], settings: SandboxParams) -> list[Agent]:
    """Up to ``sandbox.raters`` nearest neighbours within ``sandbox.radius``; at least one."""
    def distance(other: Agent) -> int:
        return max(abs(agent.position[0] - other.position[0]), abs(agent.position[1] - other.position[1]))

    near = sorted((a for a in agents if a.id != agent.id and distance(a) <= settings.radius),
                  key=lambda a: (distance(a), a.id))
    if not near:
        raise SandboxError(f"{agent.id} at {agent.position} has no neighbour within sandbox.radius = "
                           f"{settings.radius}: raise the radius or the number of agents, or shrink the grid")
    return near[: settings.raters]


def single_turn(prompt: str) -> str | None:
    """The human's text of a one-turn HH prompt, else None."""
    head, tail = f"{HUMAN}:", f"\n\n{ASSISTANT}:"
    if prompt.startswith(head) and prompt.endswith(tail) and prompt.count(f"{HUMAN}:") == 1 and prompt.count(f"{ASSISTANT}:") == 1:
        return prompt[len(head): -len(tail)].strip() or None
    return None


def question_pool(source: str | Path) -> list[Question]:
    """Distinct single-turn questions of a source, in a stable order."""
    texts = sorted({q for r in read_source(source).records if (q := single_turn(r.prompt))})
    if not texts:
        raise SandboxError(f"sandbox.questions: {source} holds no single-turn prompt to ask")
    return [Question(content_id(text), text) for text in texts]


def memory_pairs(source: str | Path) -> list[tuple[str, str, str]]:
    """``(question, chosen, rejected)`` of every single-turn pair of a source, in a stable order."""
    paired = pairs(to_frame(read_source(source).records))
    found = [(q, c, r) for p, c, r in zip(paired["prompt"], paired["chosen"], paired["rejected"]) if (q := single_turn(p))]
    if not found:
        raise SandboxError(f"sandbox.memories: {source} holds no single-turn (chosen, rejected) pair to remember")
    return found


def agent_memories(agent: Agent, known: list[tuple[str, str, str]], count: int, seed: int) -> list[MemoryEntry]:
    """What an agent remembers having answered: chosen answers for even personas, rejected for odd."""
    good = agent.persona % 2 == 0
    picked = random.Random(f"{seed}/{agent.id}/memory").sample(known, min(count, len(known)))
    return [MemoryEntry(f"seed/{agent.id}/{i}", q, c if good else r, GOOD_SCORE if good else BAD_SCORE)
            for i, (q, c, r) in enumerate(picked)]


def labelled_answers(name: str, known: list[tuple[str, str, str]], count: int, seed: int) -> list[MemoryEntry]:
    """A memory rater's labelled answers: both sides of ``count`` pairs, chosen 7 and rejected 1."""
    picked = random.Random(f"{seed}/{name}/labels").sample(known, min(count, len(known)))
    return [entry for i, (q, c, r) in enumerate(picked)
            for entry in (MemoryEntry(f"label/{name}/{i}/good", q, c, GOOD_SCORE),
                          MemoryEntry(f"label/{name}/{i}/bad", q, r, BAD_SCORE))]
