"""Rendering and the signed-in person: autoescaped templates, and one transaction per request
that knows who is asking. Every page and fragment goes through :func:`render`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader
from sqlalchemy.orm import Session

from components.app.feedback import has_consented
from components.app.schema import Account
from webapp.security import SAFE_METHODS, csrf_token
from webapp.state import app_state

# autoescape everywhere (not only for .html names): stored text is always inert
templates = Jinja2Templates(env=Environment(loader=PackageLoader("webapp", "templates"), autoescape=True))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


templates.env.filters["when"] = _when


class SignInRequired(Exception):
    """No signed-in person: pages go to the sign-in page."""


class ConsentRequired(Exception):
    """The person has not agreed to the current consent text yet."""


@contextmanager
def signed_in(request: Request, consent: bool = True) -> Iterator[tuple[Session, Account]]:
    """``(database session, account)`` in one transaction, committed when the block ends; a
    page (GET) only reads, a POST may write."""
    state = app_state(request)
    with state.reading.begin() if request.method in SAFE_METHODS else state.writing() as db:
        account = db.get(Account, request.session.get("account_id") or 0)
        if account is None:
            request.session.pop("account_id", None)
            raise SignInRequired()
        if consent and not has_consented(account):
            raise ConsentRequired()
        yield db, account


def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"csrf": csrf_token(request), **context}, status_code=status_code)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def go(request: Request, url: str) -> HTMLResponse | RedirectResponse:
    """To ``url``: a redirect, or for HTMX an ``HX-Redirect`` it follows."""
    if is_htmx(request):
        return HTMLResponse("", headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)
