"""Load check of `alignpipe app` (a benchmark, not a timed test): N concurrent sessions flag
answers for a while over loopback, then every row in the database is compared with what the
sessions were told was saved.

Setup, all real: a tiny model registered as champion in a temporary MLflow registry, the app
(``webapp.create_app``) served by uvicorn on 127.0.0.1 in a process of its own (the sessions'
threads would otherwise share its interpreter lock and inflate its latency), its feedback database
(SQLite in a temporary folder by default; ``--database services`` uses the PostgreSQL of a
running ``alignpipe services up``; or any SQLAlchemy URL), N accounts of a users file (argon2id
with the default settings). Each session is its own HTTP client with its own cookies and CSRF
token, as a browser would be:

1. every session signs in, agrees, and sends ``--chats`` messages at once, reading each answer's
   stream (Server-Sent Events) to its end: answers are written one at a time, so the sessions
   queue; the largest queue position a session was shown and every answer's status are kept
   (an answer that came out empty cannot be flagged, and is not);
2. for ``--seconds``, every session flags and re-flags its own answers in a loop (a random
   verdict, reason and rating each time) as fast as the app answers; per-person rate limits
   are lifted for this (the HTTP tests check them), so the store is what is measured.

Checks: one row per (person, message) flagged, none missing ("lost") or twice ("duplicated"),
and each row holding what its person last saved, with as many edits as the app confirmed.
Reports flags per second and flag latency (p50/p95/p99, ms), generation queue figures, the
machine and the database. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/app_load.py [--sessions 20] [--seconds 60] [--chats 2] [--database sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

WORK = Path(os.environ.setdefault("ALIGNPIPE_APP_LOAD_WORK", tempfile.mkdtemp(prefix="alignpipe-app-load-")))
os.environ.setdefault("ALIGNPIPE_HOME", str(WORK / "state"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{WORK / 'mlflow.db'}"

import components  # noqa: E402,F401  (quiet/offline defaults, after the state is placed)

REPO = Path(__file__).resolve().parent.parent
RUN = WORK.name.rsplit("-", 1)[-1]   # this run's accounts are named after it
PASSWORD = "load-check-password"
REASONS = {"bad": ("harmful", "offensive", "untrue", "unhelpful"), "good": ("helpful", "accurate", "kind")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def champion(name: str) -> None:
    """A tiny GPT-2 with a tokenizer trained on a few dialogues, registered and promoted."""
    import mlflow
    import torch

    from components.modeling.models import build_tiny_model, save_model
    from components.modeling.tokenizer import train_bpe_tokenizer
    from components.registry import registry, tracking

    texts = ["Human: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt, then bake.",
             "Human: What is the capital of France?\n\nAssistant: Paris is the capital of France."] * 30
    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    folder = save_model(build_tiny_model(tokenizer, n_layer=2, n_embd=64, n_head=2, n_positions=128), tokenizer,
                        WORK / "model")
    tracking.ensure_experiment("app-load")
    with mlflow.start_run():
        uri = registry.log_policy_model(folder)
    registry.promote(name, registry.register_candidate(uri, name, {}, ""), reason="load check")


def account(n: int) -> str:
    """Session ``n``'s account, named for this run: a PostgreSQL database outlives a run."""
    return f"load-{RUN}-{n}"


def write_project(sessions: int) -> None:
    """Params, policies (a user per session under kids-tutor) and the users file, in WORK."""
    import yaml
    from argon2 import PasswordHasher

    policies = yaml.safe_load((REPO / "policies.yaml").read_text())
    policies["users"] = {f"load-user-{n}": {"deployer": "kids-tutor"} for n in range(sessions)}
    (WORK / "policies.yaml").write_text(yaml.safe_dump(policies))
    hashed = PasswordHasher().hash(PASSWORD)
    accounts = [{"name": account(n), "role": "user", "owner": f"load-user-{n}", "password_hash": hashed}
                for n in range(sessions)]
    (WORK / "users.yaml").write_text(yaml.safe_dump({"accounts": accounts}))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tiers"]["policies"] = str(WORK / "policies.yaml")
    params["registry"]["model_name"] = "app-load-policy"
    params["app"] |= {"users": str(WORK / "users.yaml"), "flags_per_minute": 10**6, "chats_per_minute": 10**6,
                      "max_new_tokens": 16}
    (WORK / "params.yaml").write_text(yaml.safe_dump(params))


def project_config(database: str):
    """The app's settings over WORK's project (``write_project``)."""
    from components.app.database import Location, default_location, sqlite_location
    from components.params import load_params
    from components.policy.policies import load_policies
    from webapp.state import AppConfig

    loaded = load_params(WORK / "params.yaml")
    location = (sqlite_location(WORK / "feedback.db") if database == "sqlite" else
                default_location() if database == "services" else Location(database))
    return AppConfig(loaded, load_policies(loaded.tiers.policies), location, WORK / "dataset", WORK / "secret")


def serve(database: str, port: int) -> None:
    """The app on 127.0.0.1:``port`` (the server process's whole life)."""
    import uvicorn

    from webapp.main import create_app

    uvicorn.run(create_app(project_config(database)), host="127.0.0.1", port=port, access_log=False,
                log_level="warning")


@dataclass
class Session:
    name: str
    url: str
    messages: list[int] = field(default_factory=list)
    max_position: int = 0
    answers: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    saved: dict[int, tuple[str, str, int]] = field(default_factory=dict)   # message: what the app confirmed last
    edits: Counter = field(default_factory=Counter)                         # message: confirmed saves

    def __post_init__(self):
        import httpx

        self.client = httpx.Client(base_url=self.url, timeout=120, headers={"Origin": self.url})
        page = self.client.get("/login").text
        self.client.post("/login", data={"name": self.name, "password": PASSWORD, "csrf_token": _csrf(page)})
        self.csrf = _csrf(self.client.get("/consent").text)
        self.client.post("/consent", data={"agree": "yes", "csrf_token": self.csrf})
        self.headers = {"X-CSRF-Token": self.csrf, "HX-Request": "true"}

    def chat(self, count: int) -> None:
        import re

        conversation = re.search(r'name="conversation" value="(\d+)"', self.client.get("/chat").text).group(1)
        for turn in range(count):
            sent = self.client.post("/chat/send", data={"text": f"Question {turn} from {self.name}?",
                                                        "conversation": conversation}, headers=self.headers)
            if sent.status_code != 200:
                self.answers[f"refused {sent.status_code}"] += 1
                continue
            message = int(re.search(r'data-stream="/chat/stream/(\d+)"', sent.text).group(1))
            with self.client.stream("GET", f"/chat/stream/{message}") as stream:
                event = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "queue":
                        self.max_position = max(self.max_position, json.loads(line[6:])["position"])
            self.answers[event] += 1
            if event == "done" and 'name="verdict"' in self.client.get(f"/messages/{message}").text:
                self.messages.append(message)   # an empty answer has no flag form: it cannot be flagged

    def flag_until(self, deadline: float, rng: random.Random) -> None:
        while time.monotonic() < deadline and self.messages:
            message = rng.choice(self.messages)
            verdict = rng.choice(("bad", "good"))
            reason, rating = rng.choice(REASONS[verdict]), rng.randint(1, 7)
            started = time.perf_counter()
            answer = self.client.post(f"/messages/{message}/feedback", headers=self.headers,
                                      data={"verdict": verdict, "reason": reason, "rating": str(rating)})
            self.latencies.append(time.perf_counter() - started)
            if answer.status_code == 200:
                self.saved[message] = ("negative" if verdict == "bad" else "positive", reason, rating)
                self.edits[message] += 1
            else:
                self.errors[answer.status_code] += 1


def _csrf(page: str) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def check(config, sessions: list[Session]) -> dict:
    """Compare the database with what every session was told: lost, duplicated, stale rows."""
    from sqlalchemy import func, select

    from components.app.database import sessions as open_database
    from components.app.schema import Account, Feedback

    with open_database(config.database).begin() as db:
        ours = Account.name.in_([s.name for s in sessions])
        rows = db.execute(select(Account.name, Feedback.message_id, Feedback.label, Feedback.reason, Feedback.rating,
                                 Feedback.revision).join(Account, Account.id == Feedback.account_id).where(ours)).all()
        duplicated = db.scalar(select(func.count()).select_from(
            select(Feedback.account_id, Feedback.message_id).join(Account, Account.id == Feedback.account_id)
            .where(ours).group_by(Feedback.account_id, Feedback.message_id).having(func.count() > 1).subquery()))
    stored = {(name, message): (label, reason, rating, revision) for name, message, label, reason, rating, revision in rows}
    expected = {(s.name, message): (*saved, s.edits[message]) for s in sessions for message, saved in s.saved.items()}
    lost = sum(key not in stored for key in expected)
    stale = sum(key in stored and stored[key] != value for key, value in expected.items())
    return {"rows": len(rows), "expected_rows": len(expected), "lost": lost, "duplicated": duplicated,
            "unexpected": sum(key not in expected for key in stored), "stale": stale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--chats", type=int, default=2, help="answers each session asks for first (queued)")
    parser.add_argument("--database", default="sqlite", help="sqlite (a temporary file), services, or a URL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import multiprocessing
    import urllib.request

    champion("app-load-policy")
    write_project(args.sessions)
    config = project_config(args.database)
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(args.database, port), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            break
        except OSError:
            if not server.is_alive():
                sys.exit("the app did not start")
            time.sleep(0.2)
    sessions = [Session(account(n), url) for n in range(args.sessions)]

    started = time.monotonic()
    chatting = [threading.Thread(target=s.chat, args=(args.chats,)) for s in sessions]
    for thread in chatting:
        thread.start()
    for thread in chatting:
        thread.join()
    chat_seconds = time.monotonic() - started

    deadline = time.monotonic() + args.seconds
    flagging = [threading.Thread(target=s.flag_until, args=(deadline, random.Random(args.seed * 1000 + n)))
                for n, s in enumerate(sessions)]
    for thread in flagging:
        thread.start()
    for thread in flagging:
        thread.join()
    server.terminate()

    latencies = sorted(x * 1000 for s in sessions for x in s.latencies)
    quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
    answers = sum((s.answers for s in sessions), Counter())
    result = {
        "benchmark": "app_load", "sessions": args.sessions, "seconds": args.seconds, "database": config.database.kind,
        "flags": len(latencies), "flags_per_s": round(len(latencies) / args.seconds, 1),
        "flag_ms_p50": round(quantile(0.50), 1), "flag_ms_p95": round(quantile(0.95), 1),
        "flag_ms_p99": round(quantile(0.99), 1), "flag_ms_mean": round(statistics.fmean(latencies), 1) if latencies else None,
        "flag_errors": dict(sum((s.errors for s in sessions), Counter())),
        "answers": dict(answers), "answers_asked": args.sessions * args.chats,
        "max_queue_position_shown": max(s.max_position for s in sessions), "chat_phase_s": round(chat_seconds, 1),
        **check(config, sessions),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(f"app load check: {args.sessions} sessions on {url}, database {config.database.kind}, {result['machine']}")
    print(f"  chat: {result['answers_asked']} answers asked at once -> {result['answers']} in {result['chat_phase_s']} s; "
          f"largest queue position shown {result['max_queue_position_shown']}")
    print(f"  flags: {result['flags']} in {args.seconds:g} s ({result['flags_per_s']}/s); latency ms p50 "
          f"{result['flag_ms_p50']}, p95 {result['flag_ms_p95']}, p99 {result['flag_ms_p99']}; errors {result['flag_errors']}")
    print(f"  rows: {result['rows']} stored, {result['expected_rows']} expected; lost {result['lost']}, duplicated "
          f"{result['duplicated']}, unexpected {result['unexpected']}, not what was last saved {result['stale']}")
    print(json.dumps(result))
    sys.exit(0 if not (result["lost"] or result["duplicated"] or result["unexpected"] or result["stale"]) else 1)


if __name__ == "__main__":
    main()
