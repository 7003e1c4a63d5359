"""Chat: ask, and read the answer as it is written (Server-Sent Events from the generation
thread), with the model (and adapter) versions that wrote it under it. One generation runs at
a time; a waiting answer shows its place in the queue; leaving the page stops it."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from components.app import conversations
from components.app.conversations import NotYours
from components.app.feedback import REASONS
from components.app.generation import Busy, GenerationQueue, Job
from components.app.schema import Feedback, Message
from components.app.serving import NoModel, resolve
from components.app.text_rules import TextRefused, without_control
from webapp.pages import go, render, signed_in
from webapp.state import app_state

router = APIRouter()
TICK_S = 0.5
_END = object()


def flag_context(db, me, message: Message, generation: GenerationQueue) -> dict:
    """What ``_answer.html`` and ``_flag.html`` show of a turn: the message, the person's row on
    it, the reasons, and whether its answer is still on its way (an app that stopped left it
    unanswered)."""
    row = db.scalar(select(Feedback).where(Feedback.account_id == me.id, Feedback.message_id == message.id))
    return {"message": message, "flag": row, "reasons": REASONS, "live": generation.job(message.id) is not None}


@router.get("/chat")
def chat_page(request: Request, c: int | None = None):
    state = app_state(request)
    with signed_in(request) as (db, me):
        try:
            chat = conversations.conversation(db, me, c)
        except NotYours:
            raise HTTPException(404, "no such conversation") from None
        try:
            served = resolve(state.config.params, state.config.policies, me)
        except NoModel as err:
            served, missing = None, str(err)
        else:
            missing = ""
        turns = [flag_context(db, me, message, state.queue) for message in chat.messages] if chat else []
        return render(request, "chat.html", me=me, chat=chat, turns=turns, served=served, missing=missing,
                      waiting=state.queue.depth(), max_chars=state.config.params.app.max_message_chars)


@router.post("/chat/new")
def new_chat(request: Request):
    with signed_in(request) as (db, me):
        chat = conversations.new_conversation(db, me)
    return go(request, f"/chat?c={chat.id}")


@router.post("/chat/send")
def send(request: Request, text: str = Form(max_length=100_000), conversation: int = Form(0)):
    """A new turn, stored, then queued for its answer (only once stored: the worker writes into its row)."""
    state = app_state(request)
    settings = state.config.params
    with signed_in(request) as (db, me):
        if state.queue.unfinished(me.id):
            raise HTTPException(429, "an answer to you is still on its way")
        if not state.chats.allow(me.id):
            raise HTTPException(429, f"at most {settings.app.chats_per_minute} messages a minute; wait a little")
        try:
            chat = (conversations.conversation(db, me, conversation) if conversation else None
                    ) or conversations.new_conversation(db, me)
            message = conversations.ask(db, me, chat, text, settings.app.max_message_chars,
                                        settings.validation.max_prompt_chars)
            job = Job(message.id, me.id, conversations.turns(db, message))
        except NotYours:
            raise HTTPException(404, "no such conversation") from None
        except TextRefused as err:
            raise HTTPException(422, str(err)) from None
    try:
        state.queue.submit(job)
    except Busy as err:   # the same person's other message got in first
        with state.writing() as db:
            conversations.finish(db, job.message_id, "", conversations.FAILED, {})
        raise HTTPException(429, str(err)) from None
    return render(request, "_turn.html", turn={"message": message, "flag": None, "reasons": REASONS, "live": True},
                  position=state.queue.position(job))


@router.get("/messages/{message_id}")
def answer(request: Request, message_id: int):
    """One finished turn's answer, its versions and its flag form."""
    with signed_in(request) as (db, me):
        try:
            message = conversations.own_message(db, me, message_id)
        except NotYours:
            raise HTTPException(404, "no such message") from None
        return render(request, "_answer.html", turn=flag_context(db, me, message, app_state(request).queue))


def _event(name: str, payload: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


def _next_text(streamer) -> object:
    """The next piece of the answer; '' when none came within the streamer's timeout; _END at the end."""
    try:
        return next(streamer)
    except StopIteration:
        return _END
    except queue.Empty:
        return ""


async def answer_events(generation: GenerationQueue, job: Job | None) -> AsyncIterator[str]:
    """The stream of one answer: its place in the queue while it waits, its text as it is
    written, then done (or failed). When the stream is closed early (the reader left: Starlette
    closes it on disconnect), a job still under way is cancelled: skipped if it waits, stopped
    at its next token if it runs."""
    try:
        if job is None:   # finished before (or the app restarted): the stored answer stands
            yield _event("done", {})
            return
        while not await asyncio.to_thread(job.started.wait, TICK_S):
            yield _event("queue", {"position": generation.position(job)})
        if job.streamer is not None:
            while (text := await asyncio.to_thread(_next_text, job.streamer)) is not _END:
                yield _event("token", {"text": without_control(text)}) if text else ": waiting\n\n"
        await asyncio.to_thread(job.finished.wait)
        yield _event("failed", {"error": job.error}) if job.error else _event("done", {})
    finally:
        if job is not None and not job.finished.is_set():
            job.cancelled.set()


@router.get("/chat/stream/{message_id}")
async def stream(request: Request, message_id: int):
    state = app_state(request)
    with signed_in(request) as (db, me):
        try:
            conversations.own_message(db, me, message_id)
        except NotYours:
            raise HTTPException(404, "no such message") from None
    return StreamingResponse(answer_events(state.queue, state.queue.job(message_id)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})
