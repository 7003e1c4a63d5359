"""Named accounts for a local tool: who may sign in, with which role, for whose model.

Passwords are kept as argon2id hashes only (argon2-cffi). Accounts come from a small users
file (``app.users``: names, roles and hashes; the bundled one holds demo accounts whose
passwords the README states) and from ``alignpipe app add-user``. There is no sign-up. Roles:

- ``user``: ``owner`` is their user of ``policies.yaml``; their flags train that user's adapter;
- ``reviewer``: ``owner`` is the deployer they review for; they accept users' flags into its data;
- ``admin``: reviews flags into the global (tier-1) data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from components.app.schema import Account
from components.errors import UserError
from components.policy.policies import Policies

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_CHARS = 10
_hasher = PasswordHasher()
# verified when the name is unknown, so that a wrong name takes as long as a wrong password
_UNKNOWN = _hasher.hash("no such account")


class AccountError(UserError, ValueError):
    """An account that cannot be created or a users file that does not hold."""


class FileAccount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME.pattern)
    role: Literal["user", "reviewer", "admin"]
    owner: str = ""
    password_hash: str = Field(pattern=r"^\$argon2id\$")


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: list[FileAccount] = []


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return _hasher.hash(password)


def check_owner(role: str, owner: str, policies: Policies, where: str) -> None:
    """A user names a user of policies.yaml, a reviewer a deployer, an admin nobody."""
    if role == "user" and owner not in policies.users:
        raise AccountError(f"{where}: a user's owner must be a user of policies.yaml {sorted(policies.users)}, "
                           f"got {owner!r}")
    if role == "reviewer" and owner not in policies.deployers:
        raise AccountError(f"{where}: a reviewer's owner must be a deployer of policies.yaml "
                           f"{sorted(policies.deployers)}, got {owner!r}")
    if role == "admin" and owner:
        raise AccountError(f"{where}: an admin has no owner (got {owner!r})")


def read_users_file(path: str | Path, policies: Policies) -> list[FileAccount]:
    """The accounts of a users file, each checked against policies.yaml; '' reads none."""
    if not str(path):
        return []
    path = Path(path)
    if not path.is_file():
        raise AccountError(f"{path}: users file not found (app.users; '' for none)")
    try:
        accounts = UsersFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {}).accounts
    except (yaml.YAMLError, ValidationError) as err:
        raise AccountError(f"{path}: not a users file ({str(err).splitlines()[0]} ...)") from None
    names = [account.name for account in accounts]
    if len(set(names)) != len(names):
        raise AccountError(f"{path}: an account name appears twice")
    for account in accounts:
        check_owner(account.role, account.owner, policies, f"{path}: account {account.name}")
    return accounts


def sync_file_accounts(session: Session, accounts: list[FileAccount]) -> None:
    """Create the file's accounts, and update those the file created before; an account that
    ``add-user`` created or changed keeps what it was given there."""
    for entry in accounts:
        found = session.scalar(select(Account).where(Account.name == entry.name))
        if found is None:
            session.add(Account(name=entry.name, role=entry.role, owner=entry.owner,
                                password_hash=entry.password_hash, origin="file"))
        elif found.origin == "file":
            found.role, found.owner, found.password_hash = entry.role, entry.owner, entry.password_hash


def add_user(session: Session, name: str, role: str, owner: str, password: str, policies: Policies) -> Account:
    """Create the account, or give an existing one this role, owner and password."""
    if not NAME.match(name):
        raise AccountError(f"{name!r}: a name is 1-64 letters, digits, '_', '.', '@' or '-'")
    check_owner(role, owner, policies, f"account {name}")
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        account = Account(name=name, role=role, owner=owner, password_hash="")
        session.add(account)
    account.role, account.owner, account.origin = role, owner, "command"
    account.password_hash = hash_password(password)
    return account


def authenticate(session: Session, name: str, password: str) -> Account | None:
    """The account when the password matches, else None (in about the same time either way)."""
    account = session.scalar(select(Account).where(Account.name == name)) if NAME.match(name) else None
    try:
        _hasher.verify(account.password_hash if account else _UNKNOWN, password)
    except (VerificationError, InvalidHashError):
        return None
    if account is None:
        return None
    if _hasher.check_needs_rehash(account.password_hash) and account.origin == "command":
        account.password_hash = _hasher.hash(password)
    return account
