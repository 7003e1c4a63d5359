"""The app over HTTP (FastAPI's TestClient) on a real SQLite file and a real registered model:
sign-in, consent, chat with streamed answers, flags (one row per person and message), My
feedback, review, withdrawal, and the app's own safety (CSRF, Origin, Trusted Host, headers,
escaping, rate limits, isolation between people)."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from app_support import ORIGIN, PASSWORD, Person, app_config, csrf_of
from components.app.export import export
from components.app.schema import Feedback, Message
from components.registry import registry


@pytest.fixture(scope="module")
def served_model(logged_policy) -> str:
    """A model name whose champion is v1, for the module (its loaded model is cached across apps)."""
    name = f"app-policy-{uuid.uuid4().hex[:8]}"
    registry.promote(name, registry.register_candidate(logged_policy["model_uri"], name, {}, ""), reason="test champion")
    return name


@pytest.fixture
def model_name(served_model) -> str:
    return served_model


@pytest.fixture
def app(tmp_path, model_name):
    from webapp.main import create_app

    return create_app(app_config(tmp_path, model_name, {"app.max_new_tokens": 6, "app.flags_per_minute": 5}))


def rows(app) -> list[Feedback]:
    with app.state.alignpipe.sessions.begin() as db:
        return list(db.scalars(select(Feedback).order_by(Feedback.id)).all())


def exported(app, tmp_path) -> list[dict]:
    import json

    with app.state.alignpipe.sessions.begin() as db:
        export(db, app.state.alignpipe.config.policies, tmp_path / "export.jsonl")
    return [json.loads(line) for line in (tmp_path / "export.jsonl").read_text().splitlines()]


def test_sign_in_is_by_named_account_and_consent_comes_first(app):
    alice = Person(app, "alice")
    assert "alice (user · tutor-user-1)" in alice.get("/chat").text
    stranger = Person.__new__(Person)
    from fastapi.testclient import TestClient

    stranger.client = TestClient(app)
    csrf = csrf_of(stranger.client.get("/login").text)
    for name, password in (("alice", "wrong password!"), ("nobody", PASSWORD)):
        refused = stranger.client.post("/login", data={"name": name, "password": password, "csrf_token": csrf},
                                       headers={"Origin": ORIGIN})
        assert refused.status_code == 401 and "Wrong name or password." in refused.text
    assert stranger.client.get("/chat", follow_redirects=False).headers["location"] == "/login"
    assert stranger.client.get("/signup").status_code == 404


def test_an_answer_streams_and_names_the_versions_that_wrote_it(app, model_name):
    alice = Person(app, "alice")
    conversation = alice.conversation()
    sent = alice.post("/chat/send", {"text": "How do I bake bread?", "conversation": conversation})
    message = int(re.search(r'data-stream="/chat/stream/(\d+)"', sent.text).group(1))
    events = alice.events(message)
    assert events[-1] == ("done", {}) and any(name == "token" for name, _ in events)
    final = alice.get(f"/messages/{message}").text
    assert f"written by {model_name} v1" in final and 'name="verdict"' in final
    with app.state.alignpipe.sessions.begin() as db:
        stored = db.get(Message, message)
        assert (stored.status, stored.model_name, stored.model_version) == ("done", model_name, "1")
        assert "".join(text["text"] for name, text in events if name == "token").strip().startswith(stored.response[:5])


def test_a_second_flag_edits_the_first(app, tmp_path):
    alice = Person(app, "alice")
    message = alice.ask("Tell me something mean.")
    assert alice.flag(message, "bad", "offensive", rating="2").status_code == 200
    edited = alice.flag(message, "good", "kind", comment="on second thought", rating="6")
    assert edited.status_code == 200 and "saved, edit 2" in edited.text
    [row] = rows(app)
    assert (row.label, row.reason, row.rating, row.revision, row.comment) == ("positive", "kind", 6, 2, "on second thought")
    assert row.consent_version and row.consented_at is not None
    [line] = exported(app, tmp_path)
    assert line["label"] == "positive" and line["owner"] == "tutor-user-1" and line["rating"] == 6
    assert line["annotator"].startswith("anon-") and "alice" not in str(line)


@pytest.mark.parametrize("headers, why", [
    ({"X-CSRF-Token": ""}, "CSRF token missing or wrong"),
    ({"X-CSRF-Token": "forged"}, "CSRF token missing or wrong"),
    ({"Origin": "http://evil.example"}, "cross-origin request refused"),
])
def test_state_changing_requests_need_the_token_and_this_origin(app, headers, why):
    alice = Person(app, "alice")
    message = alice.ask("What is the capital of France?")
    refused = alice.post(f"/messages/{message}/feedback", {"verdict": "bad", "reason": "harmful"}, **headers)
    assert refused.status_code == 403 and why in refused.text
    bare = alice.client.post(f"/messages/{message}/feedback", data={"verdict": "bad", "reason": "harmful"})
    assert bare.status_code == 403   # no Origin, no Referer, no token
    assert rows(app) == []


def test_unknown_hosts_are_refused(app):
    from fastapi.testclient import TestClient

    assert TestClient(app, base_url="http://attacker.example").get("/login").status_code == 400


def test_headers_and_cookie_forbid_framing_scripts_from_elsewhere_and_cross_site_sending(app):
    alice = Person(app, "alice")
    page = alice.get("/chat")
    assert "script-src 'self'" in page.headers["content-security-policy"] and page.headers["x-frame-options"] == "DENY"
    from fastapi.testclient import TestClient

    fresh = TestClient(app).get("/login")
    cookie = fresh.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie
    assert "src=\"http" not in page.text and "href=\"http" not in page.text   # nothing from another origin


def test_a_stored_script_renders_inert_everywhere(app):
    alice, rita = Person(app, "alice"), Person(app, "rita")
    message = alice.ask("<script>alert('prompt')</script>")
    assert alice.flag(message, comment="<script>alert('reason')</script>").status_code == 200
    for page in (alice.get("/feedback").text, alice.get("/chat").text, rita.get("/review").text):
        assert "<script>alert(" not in page and "&lt;script&gt;alert(" in page


def test_another_person_can_neither_see_nor_change_your_rows(app):
    alice, bob = Person(app, "alice"), Person(app, "bob")
    message = alice.ask("How do I bake bread?")
    alice.flag(message, comment="alice's own words")
    [row] = rows(app)
    assert bob.get(f"/messages/{message}").status_code == 404
    assert bob.flag(message).status_code == 404
    assert bob.post(f"/feedback/{row.id}/withdraw").status_code == 404
    assert bob.get(f"/chat?c={alice.conversation()}").status_code == 404
    with bob.client.stream("GET", f"/chat/stream/{message}") as stream:
        assert stream.status_code == 404
    assert "alice's own words" not in bob.get("/feedback").text and "bake bread" not in bob.get("/feedback").text
    assert bob.get("/review").status_code == 403
    [still] = rows(app)
    assert still.withdrawn_at is None and still.revision == 1


def test_withdrawal_leaves_the_export_and_my_feedback_says_so(app, tmp_path):
    alice = Person(app, "alice")
    first, second = alice.ask("How do I bake bread?"), alice.ask("Tell me something mean.")
    alice.flag(first), alice.flag(second, "bad", "offensive")
    assert len(exported(app, tmp_path)) == 2
    one = rows(app)[0]
    assert alice.post(f"/feedback/{one.id}/withdraw").headers["hx-redirect"] == "/feedback"
    assert [line["reason"] for line in exported(app, tmp_path)] == ["offensive"]
    page = alice.get("/feedback").text
    assert "withdrawn" in page and "Not in any data version yet." in page
    alice.post("/feedback/withdraw-all")
    assert exported(app, tmp_path) == [] and all(row.withdrawn_at for row in rows(app))


def test_a_reviewer_accepts_a_users_flag_into_the_deployers_data_and_an_edit_needs_a_new_review(app, tmp_path):
    alice, rita, ada = Person(app, "alice"), Person(app, "rita"), Person(app, "ada")
    message = alice.ask("Why is the sky blue?")
    alice.flag(message, "bad", "offensive")
    [row] = rows(app)
    assert [line["owner"] for line in exported(app, tmp_path)] == ["tutor-user-1"]
    queue = rita.get("/review").text
    assert "Why is the sky blue?" in queue and "alice" not in queue and "tutor-user-1" not in queue
    assert rita.post(f"/review/{row.id}", {"decision": "accepted"}).status_code == 200
    accepted = exported(app, tmp_path)
    assert sorted(line["owner"] for line in accepted) == ["kids-tutor", "tutor-user-1"]
    assert {line["policy_tier"] for line in accepted} == {"deployer", "user"}
    assert ada.post(f"/review/{row.id}", {"decision": "accepted"}).status_code == 200
    assert sorted(line["owner"] for line in exported(app, tmp_path)) == ["", "kids-tutor", "tutor-user-1"]
    alice.flag(message, "bad", "untrue")   # edited: both reviews were of the first revision
    assert [line["owner"] for line in exported(app, tmp_path)] == ["tutor-user-1"]
    assert "flag edited since: decide again" in rita.get("/review").text


def test_an_admins_own_flag_trains_nothing_until_reviewed(app, tmp_path):
    ada = Person(app, "ada")
    message = ada.ask("What is 5 plus 7?")
    ada.flag(message)
    assert exported(app, tmp_path) == []
    ada.post(f"/review/{rows(app)[0].id}", {"decision": "accepted"})
    assert [line["owner"] for line in exported(app, tmp_path)] == [""]


def test_flags_are_rate_limited_per_person(app):
    alice = Person(app, "alice")
    message = alice.ask("How do I bake bread?")
    codes = [alice.flag(message, rating=str(1 + i % 7)).status_code for i in range(6)]
    assert codes == [200] * 5 + [429]
    assert len(rows(app)) == 1 and rows(app)[0].revision == 5


def test_bad_input_is_refused_with_its_rule(app):
    alice = Person(app, "alice")
    message = alice.ask("How do I bake bread?")
    assert "reason must be one of" in alice.flag(message, "good", "harmful").text
    assert "rating is a whole number" in alice.flag(message, rating="9").text
    assert "control character" in alice.flag(message, comment="a\x00b").text
    assert "at most 1000" in alice.flag(message, comment="x" * 1001).text
    long = alice.post("/chat/send", {"text": "y" * 2001, "conversation": alice.conversation()})
    assert long.status_code == 422 and "at most 2000" in long.text
    assert rows(app) == []


def test_a_promotion_is_served_without_a_restart(tmp_path, logged_policy):
    from webapp.main import create_app

    name = f"app-moving-{uuid.uuid4().hex[:8]}"
    registry.promote(name, registry.register_candidate(logged_policy["model_uri"], name, {}, ""), reason="first")
    alice = Person(create_app(app_config(tmp_path, name, {"app.max_new_tokens": 4})), "alice")
    first = alice.ask("Hi there")
    assert f"written by {name} v1" in alice.get(f"/messages/{first}").text
    newer = registry.register_candidate(logged_policy["model_uri"], name, {}, "")
    registry.promote(name, newer, reason="a retrain passed its gate")
    second = alice.ask("Hi again")
    assert f"written by {name} v{newer}" in alice.get(f"/messages/{second}").text


def test_the_aligned_to_page_shows_the_serving_version_and_where_my_feedback_went(app, model_name):
    alice = Person(app, "alice")
    page = alice.get("/aligned").text
    assert f"{model_name} v1 (challenger, champion)" in page and "None of it is in a data version yet" in page
    with app.state.alignpipe.sessions.begin() as db:
        assert db.scalar(select(func.count()).select_from(Feedback)) == 0


def test_the_model_reads_only_the_conversation_under_way(app):
    alice = Person(app, "alice")
    first = alice.ask("How do I bake bread?")
    alice.flag(first, comment="SECRET-REASON in my own words")
    second = alice.ask("And then?")
    chat = app.state.alignpipe.queue.job(second).chat
    assert [turn["role"] for turn in chat] == ["user", "assistant", "user"]
    assert chat[0]["content"] == "How do I bake bread?" and chat[-1]["content"] == "And then?"
    assert "SECRET-REASON" not in str(chat) and "harmful" not in str(chat)


def test_a_reader_who_leaves_cancels_a_waiting_answer_and_stops_a_running_one(app):
    """The stream's generator closed early, as Starlette closes it when the client disconnects."""
    import asyncio
    import threading

    from components.app.generation import GenerationQueue, Job
    from webapp.chat import answer_events

    release = threading.Event()

    def run(job: Job) -> None:
        job.started.set()
        release.wait(10)

    generation = GenerationQueue(run)
    running, waiting = generation.submit(Job(1, 1, [])), generation.submit(Job(2, 2, []))
    assert running.started.wait(5)

    async def read_first_event_then_leave() -> str:
        events = answer_events(generation, waiting)
        first = await anext(events)
        await events.aclose()
        return first

    assert asyncio.run(read_first_event_then_leave()) == 'event: queue\ndata: {"position": 1}\n\n'
    assert waiting.cancelled.is_set()
    release.set()
    assert waiting.finished.wait(5) and waiting.status == "stopped"

    # a running answer: the stopping criterion ends generation at the next token
    from components.app.answering import Answerer
    from components.app.schema import Account

    state = app.state.alignpipe
    alice = Person(app, "alice")
    message = alice.ask("Tell me about tea.")
    with state.sessions.begin() as db:
        account = db.scalar(select(Account.id).where(Account.name == "alice"))
    job = Job(message, account, [{"role": "user", "content": "Tell me about tea."}])
    job.cancelled.set()   # as the stream's end does while the answer is being written
    Answerer(state.config.params, state.config.policies, state.sessions)(job)
    assert job.status == "stopped"
    with state.sessions.begin() as db:
        assert db.get(Message, message).status == "stopped"


def test_failed_sign_ins_are_limited_per_name(app):
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    csrf = csrf_of(browser.get("/login").text)
    tries = [browser.post("/login", data={"name": "alice", "password": "guess number %d" % n, "csrf_token": csrf},
                          headers={"Origin": ORIGIN}).status_code for n in range(11)]
    assert tries == [401] * 10 + [429]
    right = browser.post("/login", data={"name": "alice", "password": PASSWORD, "csrf_token": csrf}, headers={"Origin": ORIGIN})
    assert right.status_code == 429   # even the right password waits: the name is under attack
    assert Person(app, "bob")   # another name is not


def test_a_turn_the_app_never_answered_is_shown_as_such_not_streamed_forever(app):
    from components.app import conversations
    from components.app.schema import Account

    alice = Person(app, "alice")
    with app.state.alignpipe.sessions.begin() as db:   # as if the app had stopped before answering it
        me = db.scalar(select(Account).where(Account.name == "alice"))
        message = conversations.ask(db, me, conversations.new_conversation(db, me), "Hello?", 2000, 20000).id
    page = alice.get(f"/messages/{message}").text
    assert "data-stream" not in page and "the app stopped before writing it" in page
    assert alice.events(message) == [("done", {})]


def test_before_any_model_is_registered_the_app_says_what_to_run(tmp_path):
    from webapp.main import create_app

    alice = Person(create_app(app_config(tmp_path, f"nothing-yet-{uuid.uuid4().hex[:8]}")), "alice")
    assert "run `make run` (or alignpipe run) first" in alice.get("/chat").text
    sent = alice.post("/chat/send", {"text": "Hello?"})
    message = int(re.search(r'data-stream="/chat/stream/(\d+)"', sent.text).group(1))
    assert alice.events(message)[-1][0] == "failed"
    assert "the model failed" in alice.get(f"/messages/{message}").text
