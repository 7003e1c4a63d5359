"""The deployer view: a deployer's reviewers see the feedback on their deployment and accept a
user's flag into the deployer's data (or reject it); admins do the same for the global data.
Reviewers see people by pseudonym, never by account name."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request

from components.app import reviews
from components.app.conversations import NotYours
from components.data.consent import account_pseudonym
from webapp.pages import go, render, signed_in
from webapp.state import app_state

router = APIRouter()


@router.get("/review")
def review_page(request: Request):
    policies = app_state(request).config.policies
    with signed_in(request) as (db, me):
        if not reviews.reviewable(me):
            raise HTTPException(403, "only a deployer's reviewers and admins review feedback")
        scope, owner = reviews.scope_of(me)
        rows = [(row, account_pseudonym(row.account.name), next((r for r in row.reviews if r.scope == scope), None))
                for row in reviews.queue(db, me, policies)]
        return render(request, "review.html", me=me, rows=rows, scope=scope, owner=owner)


@router.post("/review/{feedback_id}")
def decide(request: Request, feedback_id: int, decision: str = Form(max_length=16)):
    policies = app_state(request).config.policies
    with signed_in(request) as (db, me):
        try:
            reviews.decide(db, me, feedback_id, decision, policies)
        except NotYours:
            raise HTTPException(404, "no such feedback in your review queue") from None
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
    return go(request, "/review")
