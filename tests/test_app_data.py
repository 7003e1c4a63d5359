"""The app's data below the web layer, on real SQLite files: the export the params stage writes
(pure, pseudonymous, routed, withdrawals gone), its ledger, the cap on one person's share at
ingest, what registered versions record of it, the migrations, accounts, the generation queue."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
import yaml
from sqlalchemy import select

from app_support import cheap_hash, policies_with_second_user
from components.app import EXPORT_TAG, LEFT_OUT_TAG, version_tags
from components.app import conversations, feedback, reviews
from components.app.accounts import AccountError, add_user, authenticate, read_users_file
from components.app.database import engine_for, sessions, sqlite_location
from components.app.export import export
from components.app.generation import Busy, GenerationQueue, Job
from components.app.limits import RateLimiter
from components.app.schema import Account, Snapshot
from components.data.person_share import cap_person_share
from components.params import ParamsError, load_params
from components.policy.policies import load_policies
from conftest import REPO_ROOT, write_params


@pytest.fixture
def db(tmp_path):
    return sessions(sqlite_location(tmp_path / "app.db"))


@pytest.fixture
def policies(tmp_path):
    return load_policies(policies_with_second_user(tmp_path))


def person(db, name: str, role: str = "user", owner: str = "tutor-user-1") -> int:
    with db.begin() as session:
        account = Account(name=name, role=role, owner=owner, password_hash=cheap_hash())
        feedback.give_consent(account)
        session.add(account)
        session.flush()
        return account.id


def answered(db, account_id: int, prompt: str, response: str, chat: int | None = None) -> int:
    """A finished turn in a conversation of its own (or ``chat``); its message id."""
    with db.begin() as session:
        me = session.get(Account, account_id)
        conversation = session.get(conversations.Conversation, chat) if chat else conversations.new_conversation(session, me)
        message = conversations.ask(session, me, conversation, prompt, 2000, 20000)
        conversations.finish(session, message.id, response, "done", {"model_name": "m", "model_version": "3"})
        return message.id


def flag(db, account_id: int, message: int, verdict: str = "bad", reason: str = "harmful", rating: int | None = None):
    with db.begin() as session:
        return feedback.flag(session, session.get(Account, account_id), message, verdict, reason, "", rating, 1000).id


def exported(db, policies, path):
    with db.begin() as session:
        done = export(session, policies, path)
    return done, [json.loads(line) for line in path.read_text().splitlines()]


def test_the_export_is_pure_pseudonymous_routed_and_forgets_withdrawals(db, policies, tmp_path):
    alice = person(db, "alice@example.org")
    first = answered(db, alice, "How do I bake bread?", "Mix flour and water.")
    second = answered(db, alice, "And then?", "Bake it, you idiot.", chat=None)
    flag(db, alice, first, "good", "helpful", rating=6)
    kept = flag(db, alice, second, "bad", "offensive", rating=1)
    done, lines = exported(db, policies, tmp_path / "a.jsonl")
    again, _ = exported(db, policies, tmp_path / "b.jsonl")
    assert done.sha256 == again.sha256 and (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    text = (tmp_path / "a.jsonl").read_text()
    assert "alice" not in text and "example.org" not in text
    assert {line["annotator"] for line in lines} == {feedback_pseudonym("alice@example.org")}
    assert [(line["label"], line["owner"], line["policy_tier"], line["source"], line["reason"], line.get("rating"))
            for line in lines] == [("positive", "tutor-user-1", "user", "app", "helpful", 6),
                                   ("negative", "tutor-user-1", "user", "app", "offensive", 1)]
    assert lines[0]["prompt"] == [{"role": "user", "content": "How do I bake bread?"}]
    assert lines[0]["model"] == "m" and lines[0]["model_version"] == "3"
    with db.begin() as session:
        assert session.get(Snapshot, done.sha256).lines == [[1, kept - 1, "tutor-user-1"], [2, kept, "tutor-user-1"]]
        feedback.withdraw(session, session.get(Account, alice), kept)
    gone, lines = exported(db, policies, tmp_path / "c.jsonl")
    assert gone.sha256 != done.sha256 and [line["reason"] for line in lines] == ["helpful"]


def feedback_pseudonym(name: str) -> str:
    from components.data.consent import account_pseudonym, pseudonym

    assert account_pseudonym(name) == pseudonym(name)   # an e-mail account: the same pseudonym as in a file
    return account_pseudonym(name)


def test_a_later_turn_carries_its_conversation_and_the_export_leaves_out_what_ingest_would_refuse(db, policies, tmp_path):
    alice, ghost = person(db, "alice"), person(db, "ghost", owner="tutor-user-2")
    opening = answered(db, alice, "Hi", "Hello!")
    with db.begin() as session:
        chat = session.get(conversations.Message, opening).conversation_id
    follow_up = answered(db, alice, "Insult me", "You fool.", chat=chat)
    twin = answered(db, alice, "Hi", "Hello!")   # another chat, the same words as the opening
    flag(db, alice, follow_up)
    flag(db, alice, opening)
    flag(db, alice, twin, "good", "kind")
    flag(db, ghost, answered(db, ghost, "Hi", "Hello"))
    flag(db, alice, answered(db, alice, "Hi", "Hel\x00lo"))   # an answer stored before answers were cleaned
    without_second_user = policies.model_copy(update={"users": {"tutor-user-1": policies.users["tutor-user-1"]}})
    done, lines = exported(db, without_second_user, tmp_path / "e.jsonl")
    assert done.left_out == {"control_character": 1, "superseded": 1, "unknown_owner": 1}
    assert [(line["prompt"], line["label"]) for line in lines] == [
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
          {"role": "user", "content": "Insult me"}], "negative"),
        ([{"role": "user", "content": "Hi"}], "positive")]   # the newest word on the same prompt and answer stands


def test_reviews_route_a_flag_to_the_deployer_and_to_the_global_data(db, policies, tmp_path):
    alice = person(db, "alice")
    rita, ada = person(db, "rita", "reviewer", "kids-tutor"), person(db, "ada", "admin", "")
    message_id = flag(db, alice, answered(db, alice, "Why is the sky blue?", "Damn, scattering."))
    with db.begin() as session:
        rita_account, ada_account = session.get(Account, rita), session.get(Account, ada)
        assert [row.id for row in reviews.queue(session, rita_account, policies)] == [message_id]
        reviews.decide(session, rita_account, message_id, "accepted", policies)
        reviews.decide(session, ada_account, message_id, "rejected", policies)
    _, lines = exported(db, policies, tmp_path / "r.jsonl")
    assert [(line["owner"], line["policy_tier"], "reviewed_by" in line) for line in lines] == [
        ("kids-tutor", "deployer", True), ("tutor-user-1", "user", False)]


def test_an_answer_is_stored_without_control_characters_and_without_the_next_turn():
    from components.app.generation import answer_text

    assert answer_text(" Owls\x00 hoot.\x07\n\nHuman: and you?", transcript=True) == "Owls hoot."
    assert answer_text("Line one\nline\ttwo\x1b", transcript=False) == "Line one\nline\ttwo"


def test_one_persons_share_of_a_version_is_capped_oldest_rows_first():
    frame = pd.DataFrame({"source": ["app"] * 5 + ["hh-rlhf"] * 15, "annotator": ["anon-a"] * 4 + ["anon-b"] + ["unknown"] * 15,
                          "annotated_at": ["2026-01-0%d" % day for day in (4, 1, 3, 2)] + ["2026-01-01"] + [""] * 15,
                          "source_line": [1, 2, 3, 4, 5] + list(range(1, 16))})
    kept, summary = cap_person_share(frame, 0.1)   # at most 2 of 20 judgements per person
    assert sorted(kept[kept["annotator"] == "anon-a"]["source_line"]) == [2, 4]
    assert summary == {"rows": 3, "persons": 2, "max_person_share": 0.1, "largest_share": round(2 / 18, 4),
                       "over_cap": 2, "over_cap_lines": [1, 3]}


def test_the_params_stage_exports_and_ingest_takes_the_rows_in(db, policies, tmp_path, monkeypatch, logged_policy, model_name):
    """``app:`` in data.source: the params stage writes the export and links it, ingest reads it,
    caps one person's share, counts it on the data card; a registered version records the export."""
    from components import stages
    from components.app.provenance import uses
    from components.registry import registry
    from components.resolve import link_inputs
    from planted_data import write_planted

    monkeypatch.chdir(tmp_path)
    write_planted(tmp_path / "planted.jsonl")
    monkeypatch.setenv("ALIGNPIPE_APP_DATABASE", sqlite_location(tmp_path / "app.db").url)
    alice = person(db, "alice")
    rows = [flag(db, alice, answered(db, alice, f"Question {n}?", f"A rude answer {n}.")) for n in range(3)]
    params = load_params(write_params(tmp_path, {"data.source": ["planted.jsonl", "app:"], "data.owner_source": "",
                                                 "tiers.policies": str(tmp_path / "policies.yaml"),
                                                 "data.withdrawals": str(REPO_ROOT / "data" / "withdrawals.txt"),
                                                 "app.max_person_share": 0.0035}))   # 2 of ~600 judgements
    links = link_inputs(params)
    assert links["data_source/1-app_feedback.jsonl"].endswith("artifacts/inputs/app_feedback.jsonl")
    manifest = stages.ingest(params)
    assert manifest["app"]["rows"] == 2 and manifest["app"]["over_cap"] == 1 and manifest["app"]["over_cap_lines"] == [3]
    card = (tmp_path / "artifacts" / "dataset" / "data_card.md").read_text()
    assert "App feedback (people in the loop): 2 judgements from 1 person" in card and "1 over the cap left out" in card
    tags = version_tags(manifest)
    assert tags[LEFT_OUT_TAG] == "3" and len(tags[EXPORT_TAG]) == 64
    version = registry.register_candidate(logged_policy["model_uri"], model_name, {**tags, "data_version": "d1"}, "")
    with db.begin() as session:
        found = uses(session, session.scalars(select(feedback.Feedback)).all(), [model_name],
                     tmp_path / "artifacts" / "dataset")
    assert [use.text() for use in found[rows[0]]] == [f"{model_name} v{version} (data version d1)"]
    assert found[rows[2]] == []   # over the cap: no version used it


def test_a_missing_export_says_what_to_run(tmp_path, monkeypatch):
    from components import stages
    from components.errors import UserError

    monkeypatch.chdir(tmp_path)
    params = load_params(write_params(tmp_path, {"data.source": ["planted.jsonl", "app:"]}))
    with pytest.raises(UserError, match="run `alignpipe stage params`"):
        stages.ingest(params)


def test_the_app_entry_of_data_source_is_checked():
    for source, rule in ((["data/x.jsonl", "app:x"], "with nothing after it"), (["app:", "app:"], "more than once")):
        with pytest.raises(ParamsError, match=rule):
            load_params(REPO_ROOT / "params.yaml", {"data.source": source})


def test_the_migrations_build_what_the_tables_declare(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from components.app.schema import Base

    with engine_for(sqlite_location(tmp_path / "fresh.db")).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_accounts_hold_only_hashes_and_name_known_owners(db, policies, tmp_path):
    with db.begin() as session:
        account = add_user(session, "newcomer", "user", "tutor-user-2", "a long enough password", policies)
        assert account.password_hash.startswith("$argon2id$") and "a long enough" not in account.password_hash
        assert authenticate(session, "newcomer", "a long enough password").id == account.id
        assert authenticate(session, "newcomer", "wrong password") is None
        assert authenticate(session, "nobody", "a long enough password") is None
        with pytest.raises(AccountError, match="at least 10 characters"):
            add_user(session, "short", "admin", "", "short", policies)
        with pytest.raises(AccountError, match="a reviewer's owner must be a deployer"):
            add_user(session, "rev", "reviewer", "tutor-user-1", "a long enough password", policies)
    bad = tmp_path / "users.yaml"
    bad.write_text(yaml.safe_dump({"accounts": [{"name": "x", "role": "user", "owner": "nobody", "password_hash": cheap_hash()}]}))
    with pytest.raises(AccountError, match="account x: a user's owner must be a user of policies.yaml"):
        read_users_file(bad, policies)
    bad.write_text(yaml.safe_dump({"accounts": [{"name": "x", "role": "admin", "password_hash": "plain-text"}]}))
    with pytest.raises(AccountError, match="not a users file"):
        read_users_file(bad, policies)


def test_one_generation_at_a_time_in_order_with_positions_and_cancellation():
    release, ran = threading.Event(), []

    def run(job: Job) -> None:   # as Answerer does: started once the answer can be read
        ran.append(job.message_id)
        job.started.set()
        release.wait(10)

    generation = GenerationQueue(run)
    first, second, third = (generation.submit(Job(n, n, [])) for n in (1, 2, 3))
    assert first.started.wait(5) and generation.position(first) == 0
    assert (generation.position(second), generation.position(third)) == (1, 2)
    with pytest.raises(Busy):
        generation.submit(Job(4, 2, []))   # person 2 already waits for an answer
    second.cancelled.set()   # its reader left while it waited: it is skipped
    release.set()
    assert third.finished.wait(5) and second.finished.wait(5)
    assert ran == [1, 3] and second.status == "stopped"


def test_rate_limits_count_per_person_in_a_sliding_window():
    now = [0.0]
    limiter = RateLimiter(2, 60, clock=lambda: now[0])
    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("a"), limiter.allow("b")] == [True, True, False, True]
    now[0] = 59.0
    assert not limiter.allow("a") and limiter.retry_after("a") == pytest.approx(1.0)
    now[0] = 60.0
    assert limiter.allow("a")
