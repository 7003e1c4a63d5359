"""Chats: a person's conversations and the turns in them. The model sees only the turns of
the conversation under way, never anything else stored (no other chat, no reason or comment)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from components.app.schema import Account, Conversation, Message
from components.app.text_rules import TextRefused, checked_text

DONE, STOPPED, FAILED = "done", "stopped", "failed"   # a turn waiting for its answer is "queued"


class NotYours(LookupError):
    """No such conversation or message for this person (whether it exists for another is not said)."""


def conversation(session: Session, account: Account, conversation_id: int | None) -> Conversation | None:
    """The person's conversation ``conversation_id`` (NotYours if it is not theirs), else their
    newest, else None (reads only: a page view never writes)."""
    query = select(Conversation).where(Conversation.account_id == account.id)
    found = session.scalar(query.where(Conversation.id == conversation_id) if conversation_id else
                           query.order_by(Conversation.id.desc()).limit(1))
    if found is None and conversation_id:
        raise NotYours(conversation_id)
    return found


def new_conversation(session: Session, account: Account) -> Conversation:
    started = Conversation(account_id=account.id)
    session.add(started)
    session.flush()
    return started


def own_message(session: Session, account: Account, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is None or message.account_id != account.id:
        raise NotYours(message_id)
    return message


def ask(session: Session, account: Account, chat: Conversation, prompt: str, max_chars: int,
        max_conversation_chars: int) -> Message:
    """A new turn awaiting its answer; refused when the text breaks a rule or the conversation
    would outgrow what one training row may hold (``validation.max_prompt_chars``)."""
    prompt = checked_text(prompt, max_chars, "the message")
    used = session.scalar(select(func.coalesce(func.sum(func.length(Message.prompt) + func.length(Message.response)), 0))
                          .where(Message.conversation_id == chat.id))
    if used + len(prompt) > max_conversation_chars:
        raise TextRefused("this conversation is long enough to be one training row; start a new one")
    position = session.scalar(select(func.count()).select_from(Message).where(Message.conversation_id == chat.id))
    message = Message(conversation_id=chat.id, account_id=account.id, position=position, prompt=prompt)
    session.add(message)
    session.flush()
    return message


def turns(session: Session, message: Message) -> list[dict[str, str]]:
    """The chat up to ``message`` (see :func:`turns_of`)."""
    return turns_of(session.scalars(select(Message).where(Message.conversation_id == message.conversation_id)
                                    .order_by(Message.position)).all(), message)


def turns_of(conversation: list[Message], message: Message) -> list[dict[str, str]]:
    """The chat up to ``message`` among its conversation's turns: earlier prompts and answers,
    and its prompt; a turn left without an answer joins the next (templates want roles to alternate)."""
    earlier = [turn for turn in conversation if turn.position < message.position]
    chat: list[dict[str, str]] = []
    said = [(role, text) for turn in earlier for role, text in (("user", turn.prompt), ("assistant", turn.response))]
    for role, content in [*said, ("user", message.prompt)]:
        if not content:
            continue
        if chat and chat[-1]["role"] == role:
            chat[-1]["content"] += "\n\n" + content
        else:
            chat.append({"role": role, "content": content})
    return chat


def finish(session: Session, message_id: int, response: str, status: str, served: dict[str, str]) -> None:
    """Record the answer and which model versions wrote it (``served``: model_name, model_version,
    adapter_name, adapter_version)."""
    message = session.get(Message, message_id)
    message.response, message.status = response, status
    for key, value in served.items():
        setattr(message, key, value)
