"""Sign-in, sign-out and consent. Named accounts only (no sign-up); a wrong name and a wrong
password read alike; failed attempts per name are limited; the session is renewed at sign-in."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request

from components.app.accounts import authenticate
from components.app.feedback import CONSENT_VERSION, give_consent, has_consented
from webapp.pages import go, render, signed_in
from webapp.state import app_state

router = APIRouter()


@router.get("/")
def home(request: Request):
    return go(request, "/chat" if request.session.get("account_id") else "/login")


@router.get("/login")
def login_page(request: Request):
    return render(request, "login.html")


@router.post("/login")
def login(request: Request, name: str = Form(max_length=64), password: str = Form(max_length=1024)):
    state = app_state(request)
    if state.logins.retry_after(name.lower()) > 0:   # too many failed attempts for this name of late
        return render(request, "login.html", 429, error="Too many failed attempts for this name; wait a few minutes.")
    with state.writing() as db:
        account = authenticate(db, name, password)
        if account is None:
            state.logins.allow(name.lower())   # counts the failure
            return render(request, "login.html", 401, error="Wrong name or password.")
        request.session.clear()   # a new session (and CSRF token) for the signed-in person
        request.session["account_id"] = account.id
        consented = has_consented(account)
    return go(request, "/chat" if consented else "/consent")


@router.post("/logout")
def logout(request: Request):
    request.session.clear()
    return go(request, "/login")


@router.get("/consent")
def consent_page(request: Request):
    with signed_in(request, consent=False) as (_db, me):
        return render(request, "consent.html", me=me, version=CONSENT_VERSION)


@router.post("/consent")
def consent(request: Request, agree: str = Form("")):
    with signed_in(request, consent=False) as (_db, me):
        if agree != "yes":
            return render(request, "consent.html", 400, me=me, version=CONSENT_VERSION,
                          error="Tick the box to agree, or sign out.")
        give_consent(me)
    return go(request, "/chat")
