"""The feedback database's tables (SQLAlchemy 2). Alembic migrations create and change them
(``migrations/``); a test checks that the migrations and these classes agree.

Raw text (what people typed, what the model answered, free-text comments) lives only here.
Account names never leave it: exports carry pseudonyms (``export.py``). No IP address is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("user", "reviewer", "admin")
NEGATIVE, POSITIVE = "negative", "positive"


def now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A UTC time, aware on both databases (SQLite keeps no zone: it is stored as UTC and read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class Account(Base):
    """A person who may sign in. ``owner``: for a user, their user of policies.yaml (whose
    adapter their flags train); for a reviewer, the deployer they review for; empty for an admin."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    origin: Mapped[str] = mapped_column(String(16), default="command")   # file (users.yaml) | command (add-user)
    consent_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    messages: Mapped[list[Message]] = relationship(order_by="Message.position", back_populates="conversation")


class Message(Base):
    """One turn: what the person asked, what the model answered, and which model versions answered."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="queued")   # queued | done | stopped | failed
    model_name: Mapped[str] = mapped_column(String(256), default="")
    model_version: Mapped[str] = mapped_column(String(32), default="")
    adapter_name: Mapped[str] = mapped_column(String(256), default="")
    adapter_version: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class Feedback(Base):
    """One row per (person, message): a second flag edits the first (``revision`` counts edits).
    A withdrawn row stays, without its comment, so a person can see what used it."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("account_id", "message_id", name="one_feedback_per_person_and_message"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    comment: Mapped[str] = mapped_column(Text, default="")
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    consent_version: Mapped[str] = mapped_column(String(32))
    consented_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    message: Mapped[Message] = relationship()
    account: Mapped[Account] = relationship()
    reviews: Mapped[list[Review]] = relationship(back_populates="feedback")


class Review(Base):
    """A reviewer's or admin's decision on one flag, for one scope: ``deployer`` (the flag joins
    the deployer's tier-2 data) or ``global`` (tier-1 data, admins only). It holds for the
    ``revision`` it saw: an edit after it needs a new review."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("feedback_id", "scope", name="one_review_per_flag_and_scope"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feedback_id: Mapped[int] = mapped_column(ForeignKey("feedback.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    scope: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(128), default="")   # the deployer for scope deployer; '' global
    decision: Mapped[str] = mapped_column(String(16))             # accepted | rejected
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    feedback: Mapped[Feedback] = relationship(back_populates="reviews")
    reviewer: Mapped[Account] = relationship()


class Snapshot(Base):
    """The export's ledger: each distinct export file (by sha256) and which feedback row each
    of its lines came from, so a person can learn which data and model versions used a row."""

    __tablename__ = "snapshots"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    lines: Mapped[list] = mapped_column(JSON)   # [[line, feedback id, owner], ...]
