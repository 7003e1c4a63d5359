"""The canonical record: one row per *judgement* of a (prompt, response), whatever its format.

Several annotators judging the same response are data, not duplicates: each judgement keeps
its own row, and the judged (prompt, response) is the *item* (``item_id``); aggregation
(``components.data.aggregation``) turns an item's judgements into one training row.

A prompt is a multi-turn transcript in the HH-RLHF shape (``Human: ...\\n\\nAssistant: ...``
turns, ending with ``\\n\\nAssistant:``), so multi-turn prompts keep their turns and every
model sees the same rendering. Provenance (file, line, annotator, time, policy tier) rides
along so that any rule failure can name the source line it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import pandas as pd

NEGATIVE = "negative"
POSITIVE = "positive"
LABELS = (NEGATIVE, POSITIVE)

HUMAN = "Human"
ASSISTANT = "Assistant"
TURN_SEPARATOR = "\n\n"
SYSTEM = "system"
# message roles, any case: the three of chat APIs, and HH-RLHF's and ShareGPT's "human" and "gpt"
ROLE_NAMES = {"user": HUMAN, "human": HUMAN, "assistant": ASSISTANT, "gpt": ASSISTANT, "system": SYSTEM}
UNKNOWN_ANNOTATOR = "unknown"   # a row that names no annotator (every HH-RLHF row)

COLUMNS = [
    "id",
    "item_id",
    "prompt_id",
    "pair_id",
    "prompt",
    "response",
    "label",
    "n_turns",
    "source",
    "source_file",
    "source_line",
    "annotator",
    "annotated_at",
    "policy_tier",
    "owner",
    "group",
    "rating",
    "split",
]


@dataclass(frozen=True)
class Record:
    prompt: str
    response: str
    label: str
    source: str
    source_file: str
    source_line: int
    pair_id: str | None = None
    annotator: str = UNKNOWN_ANNOTATOR
    annotated_at: str = ""
    policy_tier: str = "global"
    owner: str = ""          # a deployer or user of policies.yaml; empty: global feedback
    group: str = ""
    rating: float | None = None   # a score on 1..7 (the sandbox's raters, Stable Alignment's groups)

    @property
    def prompt_id(self) -> str:
        return content_id(self.prompt)

    @property
    def item_id(self) -> str:
        """The judged item: a hash of prompt and response (and owner, when one is named: the same
        text judged by a user and by the global crowd are two items), stable across formats and
        re-ingestion."""
        return content_id(self.prompt, self.response, *([self.owner] if self.owner else []))

    @property
    def id(self) -> str:
        """The judgement: who said what about which item, for whom. Only a true duplicate (same
        annotator, same text, same label, same owner) shares it."""
        return content_id(self.prompt, self.response, self.annotator, self.label, *([self.owner] if self.owner else []))

    @property
    def n_turns(self) -> int:
        return self.prompt.count(f"{HUMAN}:") + self.prompt.count(f"{ASSISTANT}:")

    def row(self) -> dict:
        return {**asdict(self), "id": self.id, "item_id": self.item_id, "prompt_id": self.prompt_id,
                "n_turns": self.n_turns}


def content_id(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20]


class TurnError(ValueError):
    """A chat turn that a transcript has no place for."""


def render_turns(turns: list[tuple[str, str]]) -> str:
    """``[("user", "hi"), ("assistant", "hello"), ("user", "and?")]`` → transcript prompt.

    System messages open the chat: they become one ``system:`` first paragraph (several are
    joined), which ``chat.transcript_messages`` reads back as the system message. A role outside
    ``ROLE_NAMES``, or a system message after a user or assistant turn, raises TurnError: a
    transcript could only show it as text inside another turn.
    """
    labels = [ROLE_NAMES.get(role.lower()) for role, _ in turns]
    unknown = sorted({role for (role, _), label in zip(turns, labels) if label is None})
    if unknown:
        raise TurnError(f"unknown message role(s) {unknown}: expected system, user or assistant "
                        "(or human, gpt; any case)")
    opening = next((i for i, label in enumerate(labels) if label != SYSTEM), len(turns))
    if SYSTEM in labels[opening:]:
        raise TurnError(f"message {labels.index(SYSTEM, opening) + 1} is a system message after a user or "
                        "assistant turn: system messages must open the chat")
    system = [f"{SYSTEM}: " + TURN_SEPARATOR.join(text.strip() for _, text in turns[:opening])] if opening else []
    lines = [f"{label}: {text.strip()}" for (_, text), label in zip(turns[opening:], labels[opening:])]
    return TURN_SEPARATOR.join(system + lines + [f"{ASSISTANT}:"])


def to_frame(records: list[Record]) -> pd.DataFrame:
    """Records → DataFrame with the canonical columns (``split`` filled in later)."""
    # object columns: pandas 3's string dtype cannot hold a lone surrogate, and such text must
    # reach the validation suite (rule encodable_text) to be reported with its line
    frame = pd.DataFrame([r.row() for r in records], columns=[c for c in COLUMNS if c != "split"], dtype=object)
    frame["source_line"] = frame["source_line"].astype("int64")
    frame["n_turns"] = frame["n_turns"].astype("int64")
    frame["rating"] = frame["rating"].astype("float64")
    return frame


PAIR_GROUP_COLUMNS = ("source", "annotator", "policy_tier", "owner", "group")


def pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """(prompt, chosen, rejected) rows for every pair_id that has exactly one of each label.

    Works on items (training rows) or judgements. The group columns come from the rejected
    side: the negative is what a pair is evaluated on.
    """
    paired = frame.dropna(subset=["pair_id"])
    counts = paired.groupby(["pair_id", "label"]).size().unstack(fill_value=0)
    complete = counts.index[(counts.get(POSITIVE, 0) == 1) & (counts.get(NEGATIVE, 0) == 1)]
    paired = paired[paired["pair_id"].isin(complete)]
    chosen = paired[paired["label"] == POSITIVE].set_index("pair_id")[["response"]]
    rejected = paired[paired["label"] == NEGATIVE].set_index("pair_id")
    rejected = rejected[["prompt_id", "prompt", "response", *PAIR_GROUP_COLUMNS]]
    joined = rejected.merge(chosen, left_index=True, right_index=True, suffixes=("", "_chosen"))
    joined = joined.rename(columns={"response": "rejected", "response_chosen": "chosen"})
    columns = ["pair_id", "prompt_id", "prompt", "chosen", "rejected", *PAIR_GROUP_COLUMNS]
    return joined.reset_index()[columns].sort_values("pair_id").reset_index(drop=True)
