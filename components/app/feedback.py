"""Flags and ratings: one row per (person, message), edited by a second flag, withdrawn by its
author. A withdrawn row leaves every later export at once; the row itself stays (its comment
erased) so its author can see which versions had already used it.

Consent comes first: a person agrees to the current :data:`CONSENT_VERSION` before their
first flag, and every row keeps the version and time they agreed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from components.app.conversations import NotYours, own_message
from components.app.schema import NEGATIVE, POSITIVE, Account, Feedback, now
from components.app.text_rules import TextRefused, checked_text

CONSENT_VERSION = "2026-12"
REASONS = {
    NEGATIVE: ("harmful", "offensive", "untrue", "unhelpful", "privacy", "other"),
    POSITIVE: ("helpful", "accurate", "kind", "safe-refusal", "other"),
}
LABELS = {"bad": NEGATIVE, "good": POSITIVE}


class NeedsConsent(PermissionError):
    """The person has not agreed to the current consent text yet."""


def give_consent(account: Account) -> None:
    account.consent_version, account.consented_at = CONSENT_VERSION, now()


def has_consented(account: Account) -> bool:
    return account.consent_version == CONSENT_VERSION


def flag(session: Session, account: Account, message_id: int, verdict: str, reason: str, comment: str,
         rating: int | None, max_comment_chars: int) -> Feedback:
    """Create or edit the person's row for their message ``message_id``. ``verdict`` is bad or
    good; ``reason`` one of :data:`REASONS` for it; ``rating`` 1..7 or None."""
    if not has_consented(account):
        raise NeedsConsent(account.name)
    message = own_message(session, account, message_id)
    if not message.response.strip():
        raise TextRefused("an empty answer cannot be flagged")
    label = LABELS.get(verdict)
    if label is None:
        raise TextRefused(f"the verdict must be one of {sorted(LABELS)}")
    if reason not in REASONS[label]:
        raise TextRefused(f"the reason must be one of {', '.join(REASONS[label])}")
    if rating is not None and not 1 <= rating <= 7:
        raise TextRefused("a rating is a whole number from 1 to 7")
    comment = checked_text(comment, max_comment_chars, "the comment", required=False)
    values = {"label": label, "reason": reason, "comment": comment, "rating": rating, "updated_at": now(),
              "withdrawn_at": None}
    row = _row(session, account, message_id)
    if row is None:
        row = Feedback(account_id=account.id, message_id=message_id, consent_version=account.consent_version,
                       consented_at=account.consented_at, revision=1, **values)
        try:
            with session.begin_nested():
                session.add(row)
            return row
        except IntegrityError:   # the same person's other request made it first: edit that one
            row = _row(session, account, message_id)
    for key, value in values.items():
        setattr(row, key, value)
    row.revision += 1
    session.flush()
    return row


def _row(session: Session, account: Account, message_id: int) -> Feedback | None:
    return session.scalar(select(Feedback).where(Feedback.account_id == account.id, Feedback.message_id == message_id))


def own_feedback(session: Session, account: Account, feedback_id: int) -> Feedback:
    row = session.get(Feedback, feedback_id)
    if row is None or row.account_id != account.id:
        raise NotYours(feedback_id)
    return row


def withdraw(session: Session, account: Account, feedback_id: int | None = None) -> list[Feedback]:
    """Withdraw one of the person's rows, or all of them (``feedback_id`` None)."""
    rows = ([own_feedback(session, account, feedback_id)] if feedback_id is not None else
            session.scalars(select(Feedback).where(Feedback.account_id == account.id,
                                                   Feedback.withdrawn_at.is_(None))).all())
    for row in rows:
        row.withdrawn_at, row.comment = now(), ""
    return list(rows)


def listing(session: Session, account: Account) -> list[Feedback]:
    """The person's rows, newest first."""
    return list(session.scalars(select(Feedback).where(Feedback.account_id == account.id)
                                .order_by(Feedback.updated_at.desc(), Feedback.id.desc())).all())
