"""What people type is checked where it enters, by the rules every source meets at ingest:
UTF-8 text, no NUL or other control characters (a newline and a tab are text), within a
length. The texts that train (the chat turns and answers) meet the Great Expectations suite
again at ingest, like any source's rows."""

from __future__ import annotations

import re

from components.errors import UserError

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def without_control(text: str) -> str:
    """``text`` less its control characters: what a model wrote, made fit to show and to train on
    (a byte-level tokenizer can decode a NUL, which ingest would quarantine)."""
    return _CONTROL.sub("", text)


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


class TextRefused(UserError, ValueError):
    """Input that breaks a text rule; the message says which, for the person who typed it."""


def checked_text(text: str, max_chars: int, what: str, required: bool = True) -> str:
    """``text`` stripped, or :class:`TextRefused` naming the rule."""
    text = (text or "").replace("\r\n", "\n").strip()
    if required and not text:
        raise TextRefused(f"{what} is empty")
    if len(text) > max_chars:
        raise TextRefused(f"{what} is {len(text)} characters long; at most {max_chars}")
    if has_control(text):
        raise TextRefused(f"{what} holds a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TextRefused(f"{what} is not valid text (a lone surrogate)") from None
    return text
