"""Flag, rate, list, edit and withdraw: every route acts only on the signed-in person's own
messages and rows (anyone else's is "not found", whether or not it exists)."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request

from components.app import feedback as flags
from components.app.conversations import NotYours, own_message
from components.app.provenance import model_names, uses
from components.app.text_rules import TextRefused
from webapp.chat import flag_context
from webapp.pages import go, is_htmx, render, signed_in
from webapp.state import app_state

router = APIRouter()


def _rating(text: str) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit():
        raise TextRefused("a rating is a whole number from 1 to 7")
    return int(text)


@router.post("/messages/{message_id}/feedback")
def flag(request: Request, message_id: int, verdict: str = Form(max_length=8), reason: str = Form(max_length=32),
         comment: str = Form("", max_length=100_000), rating: str = Form("", max_length=4)):
    state = app_state(request)
    with signed_in(request) as (db, me):
        if not state.flags.allow(me.id):
            raise HTTPException(429, f"at most {state.config.params.app.flags_per_minute} flags a minute; wait a little")
        try:
            flags.flag(db, me, message_id, verdict, reason, comment, _rating(rating),
                       state.config.params.app.max_comment_chars)
        except NotYours:
            raise HTTPException(404, "no such message") from None
        except TextRefused as err:
            raise HTTPException(422, str(err)) from None
        message = own_message(db, me, message_id)
        if not is_htmx(request):
            return go(request, f"/chat?c={message.conversation_id}")
        return render(request, "_flag.html", turn=flag_context(db, me, message, state.queue), saved=True)


def _listing(request: Request, db, me) -> dict:
    config = app_state(request).config
    rows = flags.listing(db, me)
    return {"me": me, "rows": rows, "reasons": flags.REASONS,
            "uses": uses(db, rows, model_names(config.params, config.policies, me), config.dataset_dir)}


@router.get("/feedback")
def my_feedback(request: Request):
    with signed_in(request) as (db, me):
        return render(request, "feedback.html", **_listing(request, db, me))


@router.post("/feedback/{feedback_id}/withdraw")
def withdraw(request: Request, feedback_id: int):
    with signed_in(request) as (db, me):
        try:
            flags.withdraw(db, me, feedback_id)
        except NotYours:
            raise HTTPException(404, "no such feedback") from None
    return go(request, "/feedback")


@router.post("/feedback/withdraw-all")
def withdraw_all(request: Request):
    with signed_in(request) as (db, me):
        flags.withdraw(db, me)
    return go(request, "/feedback")
