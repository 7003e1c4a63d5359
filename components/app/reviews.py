"""Review: a deployer's reviewers see the feedback on their deployment and may accept a user's
flag into the deployer's (tier-2) data; admins see all feedback and may accept a flag into the
global (tier-1) data. Every decision is recorded (who, when, which revision of the flag);
nothing enters another owner's data without one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from components.app.conversations import NotYours
from components.app.schema import Account, Feedback, Review, now
from components.policy.policies import Policies

DECISIONS = ("accepted", "rejected")


def reviewable(account: Account) -> bool:
    return account.role in ("reviewer", "admin")


def _authors(session: Session, reviewer: Account, policies: Policies) -> list[int] | None:
    """Whose flags ``reviewer`` sees: a reviewer, the users under their deployer; an admin, everyone (None)."""
    if reviewer.role == "admin":
        return None
    users = [name for name, user in policies.users.items() if user.deployer == reviewer.owner]
    return list(session.scalars(select(Account.id).where(Account.role == "user", Account.owner.in_(users))).all())


def queue(session: Session, reviewer: Account, policies: Policies) -> list[Feedback]:
    """Flags ``reviewer`` may decide on, newest first (none for a person who is not a reviewer)."""
    if not reviewable(reviewer):
        return []
    query = (select(Feedback).where(Feedback.withdrawn_at.is_(None)).order_by(Feedback.updated_at.desc(), Feedback.id.desc())
             .options(selectinload(Feedback.account), selectinload(Feedback.message), selectinload(Feedback.reviews)))
    authors = _authors(session, reviewer, policies)
    if authors is not None:
        query = query.where(Feedback.account_id.in_(authors))
    return list(session.scalars(query).all())


def scope_of(reviewer: Account) -> tuple[str, str]:
    """``(scope, owner)`` a reviewer's decisions apply to."""
    return ("global", "") if reviewer.role == "admin" else ("deployer", reviewer.owner)


def decide(session: Session, reviewer: Account, feedback_id: int, decision: str, policies: Policies) -> Review:
    """Record ``reviewer``'s decision on a flag in their queue (a later decision replaces it)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    row = session.get(Feedback, feedback_id)
    authors = _authors(session, reviewer, policies) if reviewable(reviewer) else []
    if row is None or row.withdrawn_at is not None or (authors is not None and row.account_id not in authors):
        raise NotYours(feedback_id)
    scope, owner = scope_of(reviewer)
    review = session.scalar(select(Review).where(Review.feedback_id == row.id, Review.scope == scope))
    if review is None:
        review = Review(feedback_id=row.id, scope=scope)
        session.add(review)
    review.reviewer_id, review.owner, review.decision = reviewer.id, owner, decision
    review.revision, review.created_at = row.revision, now()
    session.flush()
    return review
