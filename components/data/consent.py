"""Consent and provenance: pseudonymous annotators and withdrawn feedback.

An annotator id that is an e-mail address is replaced at read time by ``anon-<12 hex>``, an
HMAC-SHA256 under a salt kept outside the repository, so addresses never reach the dataset,
MLflow, tags or cards, while the same person keeps the same pseudonym across versions.
The salt comes from ``ALIGNPIPE_PSEUDONYM_SALT`` or a file created on first use
(``ALIGNPIPE_SALT_FILE``, default ``~/.config/alignpipe/pseudonym.salt``, mode 0600).

A withdrawals file lists annotator ids (e-mails included) and/or record ids (a judgement
``id`` or an ``item_id``) whose feedback must no longer be used; ingest drops the matching
judgements and counts them without naming anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from components.errors import UserError

SALT_ENV = "ALIGNPIPE_PSEUDONYM_SALT"
SALT_FILE_ENV = "ALIGNPIPE_SALT_FILE"
DEFAULT_SALT_FILE = Path("~/.config/alignpipe/pseudonym.salt")
PSEUDONYM_PREFIX = "anon-"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class WithdrawalsError(UserError, FileNotFoundError):
    """The withdrawals file named in ``data.withdrawals`` cannot be read."""


@lru_cache(maxsize=1)
def _salt() -> bytes:
    """The salt, read once per process; created with ``secrets`` if neither source exists."""
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV].encode()
    path = Path(os.environ.get(SALT_FILE_ENV) or DEFAULT_SALT_FILE).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def is_email(value: str) -> bool:
    return EMAIL.fullmatch(value.strip()) is not None


def pseudonym(annotator: str) -> str:
    """``anon-<12 hex>`` for an e-mail address (case-insensitive); any other id unchanged."""
    return account_pseudonym(annotator) if is_email(annotator) else annotator


def account_pseudonym(account: str) -> str:
    """``anon-<12 hex>`` for any id, e-mail-shaped or not: an app account's name never leaves
    its database (an e-mail account gets the pseudonym its address gets in a file)."""
    digest = hmac.new(_salt(), account.strip().lower().encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:12]


def scrub(text: str) -> str:
    """Every e-mail address inside free text replaced by its pseudonym (quarantined raw lines)."""
    return EMAIL.sub(lambda match: pseudonym(match.group(0)), text)


def read_withdrawals(path: str | Path) -> set[str]:
    """Ids listed one per line, ``#`` starting a comment; e-mails come back as pseudonyms."""
    path = Path(path)
    if not path.is_file():
        raise WithdrawalsError(f"{path}: withdrawals file not found (data.withdrawals); "
                               "create it (it may hold only comments) or point data.withdrawals at yours")
    entries = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {pseudonym(entry) for entry in entries if entry}


@dataclass(frozen=True)
class Withdrawn:
    """Counts only: who withdrew is never recorded."""

    listed: int = 0        # entries in the withdrawals file
    judgements: int = 0    # judgements excluded
    annotators: int = 0    # distinct listed annotators who had judgements here

    def as_dict(self) -> dict:
        return asdict(self)


def withdraw(judgements: pd.DataFrame, listed: set[str]) -> tuple[pd.DataFrame, Withdrawn]:
    """Drop judgements whose annotator, judgement id or item id is listed."""
    by_annotator = judgements["annotator"].isin(listed)
    gone = by_annotator | judgements["id"].isin(listed) | judgements["item_id"].isin(listed)
    counts = Withdrawn(len(listed), int(gone.sum()), int(judgements.loc[by_annotator, "annotator"].nunique()))
    return judgements[~gone].reset_index(drop=True), counts
