"""The app's feedback as a source: the rows that are not withdrawn, in the generic JSONL that
ingest reads, written where the ``data.source`` entry ``app:`` points (the ``params`` stage
runs this on every ``dvc repro`` and ``alignpipe run``).

The file is a pure function of the rows (sorted, no clock in it), so DVC sees a data change
exactly when flags, edits, reviews or withdrawals changed what trains. Account names never
leave the database: each row's annotator is the account's salted pseudonym. Routing:

- a user's flag trains only their own adapter (``owner``: their user of policies.yaml);
- a reviewer's own flag, and a user's flag a reviewer accepted, train their deployer's adapter;
- a flag reaches the global (tier-1) data only through an admin's recorded review.

A review holds for the revision it saw. Rows that would only be quarantined at ingest are left
out here and counted: empty answers, a control character in a text, an owner policies.yaml no
longer knows, and a person's older row on the same prompt and answer for the same owner (the
newest stands).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from components.app import SOURCE
from components.app.conversations import turns_of
from components.app.schema import Feedback, Message, Snapshot
from components.app.text_rules import has_control
from components.atomic import write_text
from components.data.consent import account_pseudonym
from components.params import Params
from components.policy.policies import GLOBAL, Policies, load_policies

ACCEPTED = "accepted"


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    rows: int
    left_out: dict[str, int] = field(default_factory=dict)   # reason: rows


def owners_of(row: Feedback) -> list[tuple[str, str]]:
    """``(owner, reviewer pseudonym or '')`` for every dataset row a flag becomes (none when withdrawn)."""
    if row.withdrawn_at is not None:
        return []
    author = row.account
    routed = [(author.owner, "")] if author.role in ("user", "reviewer") else []
    for review in row.reviews:
        if review.decision == ACCEPTED and review.revision == row.revision:
            routed.append((review.owner, account_pseudonym(review.reviewer.name)))
    return list(dict.fromkeys(routed))


def _chats(session: Session, rows: list[Feedback]) -> dict[int, list[dict[str, str]]]:
    """Each flagged message's chat up to its prompt, from one query per export."""
    conversations = {row.message.conversation_id for row in rows}
    messages = session.scalars(select(Message).where(Message.conversation_id.in_(conversations))
                               .order_by(Message.conversation_id, Message.position)).all() if conversations else []
    by_conversation: dict[int, list[Message]] = {}
    for message in messages:
        by_conversation.setdefault(message.conversation_id, []).append(message)
    return {row.message_id: turns_of(by_conversation[row.message.conversation_id], row.message) for row in rows}


def export_rows(session: Session, policies: Policies) -> tuple[list[dict], list[tuple[int, str]], Counter]:
    """The rows to write (sorted), ``(feedback id, owner)`` per line, and what was left out."""
    rows = session.scalars(select(Feedback).where(Feedback.withdrawn_at.is_(None)).order_by(Feedback.id)
                           .options(selectinload(Feedback.account), selectinload(Feedback.message),
                                    selectinload(Feedback.reviews))).all()
    chats = _chats(session, rows)
    tiers = policies.owners()
    left_out: Counter = Counter()
    newest: dict[tuple, tuple[Feedback, str, str]] = {}
    for row in rows:
        if not row.message.response.strip():
            left_out["empty_answer"] += 1
            continue
        if any(has_control(text) for text in (row.message.response, *(turn["content"] for turn in chats[row.message_id]))):
            left_out["control_character"] += 1
            continue
        for owner, reviewer in owners_of(row):
            if owner and owner not in tiers:
                left_out["unknown_owner"] += 1
                continue
            key = (row.account_id, owner, json.dumps(chats[row.message_id]), row.message.response.strip())
            if key in newest:
                left_out["superseded"] += 1
                if (newest[key][0].updated_at, newest[key][0].id) > (row.updated_at, row.id):
                    continue
            newest[key] = (row, owner, reviewer)
    chosen = sorted(newest.values(), key=lambda entry: (entry[0].id, entry[1]))
    lines = [_line(row, owner, reviewer, chats[row.message_id], tiers.get(owner, GLOBAL)) for row, owner, reviewer in chosen]
    return lines, [(row.id, owner) for row, owner, _ in chosen], left_out


def _line(row: Feedback, owner: str, reviewer: str, chat: list[dict[str, str]], tier: str) -> dict:
    message = row.message
    line = {"prompt": chat, "response": message.response.strip(), "label": row.label,
            "annotator": account_pseudonym(row.account.name), "annotated_at": row.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "owner": owner, "policy_tier": tier, "source": SOURCE, "group": SOURCE, "reason": row.reason,
            "model": message.model_name, "model_version": message.model_version,
            "adapter": message.adapter_name, "adapter_version": message.adapter_version}
    if row.rating is not None:
        line["rating"] = row.rating
    if reviewer:
        line["reviewed_by"] = reviewer
    return line


def export(session: Session, policies: Policies, path: Path) -> Exported:
    """Write the export to ``path`` (atomically) and record it in the ledger when it is new."""
    lines, sources, left_out = export_rows(session, policies)
    text = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    write_text(path, text)
    if session.get(Snapshot, sha) is None:
        session.add(Snapshot(sha256=sha, lines=[[number, feedback_id, owner] for number, (feedback_id, owner)
                                                in enumerate(sources, start=1)]))
    return Exported(path, sha, len(lines), dict(sorted(left_out.items())))


def export_from_database(params: Params, path: Path) -> Exported:
    """The params stage's call: export from the project's feedback database (``database.py``)."""
    from components.app.database import sessions

    with sessions().begin() as session:
        return export(session, load_policies(params.tiers.policies), path)
