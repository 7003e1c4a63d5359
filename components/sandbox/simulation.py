"""A sandbox run: rounds of draft → rate → feedback → revise → observe, logged and resumable.

Each round is seeded by (seed, round) alone and every agent's memory is rebuilt from the
logged rounds before it, so a run killed between rounds resumes at the last finished round
and ends with the same records as a run never interrupted. A round's file is written whole
(temporary file, then rename) or not at all.

Cost: per round, all drafts in one batched ``generate`` call, all ratings of an LM rater in
one forward pass, all revisions in one more ``generate`` call.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from components.params import Params
from components.sandbox.backends import Backend, open_backend
from components.sandbox.memory import Memory, MemoryEntry, embedder
from components.sandbox.prompts import draft_chat, revise_chat, settings_hash, template_hashes
from components.sandbox.raters import LMRater, MemoryRater
from components.sandbox.world import (Agent, Question, SandboxError, agent_memories, labelled_answers, memory_pairs,
                                      place_agents, question_pool, raters_of)

RUN_FILE = "run.json"
ROUNDS_DIR = "rounds"


def round_file(out_dir: Path, number: int) -> Path:
    return out_dir / ROUNDS_DIR / f"round-{number:03d}.jsonl"


@dataclass
class Sandbox:
    params: Params
    run_id: str
    agents: list[Agent]
    questions: list[Question]
    backend: Backend
    raters: dict[str, LMRater | MemoryRater]   # by rater agent id
    observer: LMRater | MemoryRater
    memories: dict[str, Memory]               # by agent id
    versions: dict[str, str]

    @property
    def settings(self):
        return self.params.sandbox

    def run_round(self, number: int) -> list[dict]:
        """Round ``number`` (1-based): every agent drafts, is rated, revises, is observed."""
        s, seed = self.settings, self.params.seed * 1000 + number
        asked = random.Random(seed).sample(self.questions, min(len(self.agents), len(self.questions)))
        asked = [asked[i % len(asked)] for i in range(len(self.agents))]
        query = self.memories[self.agents[0].id].embed([q.text for q in asked])
        recalled = [self.memories[a.id].nearest(vector, s.retrieve, s.min_similarity) for a, vector in zip(self.agents, query)]
        chats = [draft_chat(s.personas[a.persona], [m for m, _ in found], q.text)
                 for a, found, q in zip(self.agents, recalled, asked)]
        drafts = self.backend.generate(chats, s.max_new_tokens, s.temperature, seed)
        ratings = {a.id: [] for a in self.agents}
        for rater, requests in self._rating_batches().values():
            questions, answers = [asked[i].text for _, i in requests], [drafts[i] for _, i in requests]
            scores = rater.rate(questions, answers)
            feedback = rater.feedback(questions, answers, scores, seed)
            for (rater_id, i), score, text in zip(requests, scores, feedback):
                ratings[self.agents[i].id].append({"rater": rater_id, **score.as_dict(), "feedback": text})
        revise = [revise_chat(chat, draft, mean(r["score"] for r in ratings[a.id]), [r["feedback"] for r in ratings[a.id]])
                  for chat, draft, a in zip(chats, drafts, self.agents)]
        revisions = self.backend.generate(revise, s.max_new_tokens, s.temperature, seed + 1)
        observed = self.observer.rate([q.text for q in asked] * 2, drafts + revisions)
        n = len(self.agents)
        return [{
            "run_id": self.run_id, "round": number, "agent": a.id, "persona": s.personas[a.persona],
            "question_id": q.id, "question": q.text, "draft": draft,
            "memory_ids": [m.id for m, _ in found], "ratings": sorted(ratings[a.id], key=lambda r: r["rater"]),
            "revision": revision, "observer_before": observed[i].as_dict(), "observer_after": observed[n + i].as_dict(),
            "backends": self.versions, "templates": template_hashes(), "seed": self.params.seed,
        } for i, (a, q, found, draft, revision) in enumerate(zip(self.agents, asked, recalled, drafts, revisions))]

    def _rating_batches(self) -> dict[int, tuple[LMRater | MemoryRater, list[tuple[str, int]]]]:
        """(rater id, agent position) requests, grouped so that each group is one call: every
        rating of raters sharing a model in one forward pass; a memory rater's own in one."""
        batches = {}
        for position, agent in enumerate(self.agents):
            for neighbour in raters_of(agent, self.agents, self.settings):
                rater = self.raters[neighbour.id]
                key = id(rater.backend) if isinstance(rater, LMRater) else id(rater)
                batches.setdefault(key, (rater, []))[1].append((neighbour.id, position))
        return batches

    def remember(self, records: list[dict]) -> None:
        """Each agent keeps its question with the answer the observer liked better, its mean rating
        and the feedback: one batch per agent per round, as when the round ran."""
        for record in records:
            better = record["revision"] if record["observer_after"]["expected"] > record["observer_before"]["expected"] else record["draft"]
            entry = MemoryEntry(f"{record['run_id']}/{record['round']}/{record['agent']}", record["question"], better,
                                mean(r["score"] for r in record["ratings"]),
                                " | ".join(r["feedback"] for r in record["ratings"]))
            self.memories[record["agent"]].add([entry])


def resolve_model(params: Params, spec: str) -> str:
    """A location for one backend: registry aliases of ``registry.model_name`` become the version
    they point at now (``champion`` → ``models:/alignpipe-policy/3``), so the run id and DVC
    change when the alias moves; folders, URIs and URLs stay as they are."""
    if spec.startswith(("http://", "https://", "models:/", "runs:/")) or Path(spec).is_dir():
        return spec
    from components.registry import registry

    version = registry.version_by_alias(params.registry.model_name, spec)
    return f"models:/{params.registry.model_name}/{version.version}" if version else ""


def agent_model(params: Params) -> str:
    """The first of ``sandbox.model`` that exists (an alias, folder, URI or URL)."""
    for spec in params.sandbox.model:
        if location := resolve_model(params, spec):
            return location
    raise SandboxError(f"sandbox.model: none of {params.sandbox.model} exists: run `alignpipe run` first (for "
                       f"the aliases of {params.registry.model_name}) or name a model folder, URI or http(s) URL")


def open_sandbox(params: Params) -> Sandbox:
    """Load sources, backends and starting memories; the run id hashes everything that shapes it."""
    s, ref = params.sandbox, params.reference
    location = agent_model(params)
    observer_location = {"memory": "", "agent": location}.get(s.observer) or resolve_model(params, s.observer) or s.observer
    if observer_location == location:
        raise SandboxError(f"sandbox.observer: {s.observer!r} is {location}, the agents' own model; the observer must "
                           "not be the agents' own model (memory, or another model)")
    agents = place_agents(s, params.seed)
    questions, known = question_pool(s.questions), memory_pairs(s.memories)
    embed = embedder(s.retrieval)
    backend = open_backend(location, ref.trust_remote_code, ref.dtype)
    rater_ids = sorted({r.id for a in agents for r in raters_of(a, agents, s)})
    if s.rater == "memory":
        raters = {rid: MemoryRater(_labelled(embed, rid, known, s.memories_per_agent, params.seed), rid) for rid in rater_ids}
    else:
        shared = backend if s.rater == "agent" else open_backend(resolve_model(params, s.rater) or s.rater,
                                                                 ref.trust_remote_code, ref.dtype)
        raters = {rid: LMRater(shared, rid, s.max_new_tokens) for rid in rater_ids}
    if s.observer == "memory":
        observer = MemoryRater(_labelled(embed, "observer", known, s.memories_per_agent, params.seed), "observer")
    else:
        observer = LMRater(open_backend(observer_location, ref.trust_remote_code, ref.dtype), "observer")
    versions = {"agent": backend.version, "rater": next(iter(raters.values())).version, "observer": observer.version}
    settings = {k: v for k, v in params.to_dict()["sandbox"].items() if k != "enabled"}
    run_id = settings_hash({"sandbox": settings, "seed": params.seed, "backends": versions, "templates": template_hashes(),
                            "questions": [q.id for q in questions], "memories": len(known)})
    memories = {}
    for agent in agents:
        memories[agent.id] = Memory(embed)
        memories[agent.id].add(agent_memories(agent, known, s.memories_per_agent, params.seed))
    return Sandbox(params, run_id, agents, questions, backend, raters, observer, memories, versions)


def _labelled(embed, name: str, known, count: int, seed: int) -> Memory:
    memory = Memory(embed, by_answer=True)
    memory.add(labelled_answers(name, known, count, seed))
    return memory


def read_round(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prepare(sandbox: Sandbox, out_dir: Path) -> list[int]:
    """Make ``out_dir`` this run's: keep the finished rounds of the same run (replaying them into
    the agents' memories) and clear anything from another run. Returns the rounds still to run."""
    run_file = out_dir / RUN_FILE
    if run_file.exists() and json.loads(run_file.read_text())["run_id"] != sandbox.run_id:
        shutil.rmtree(out_dir / ROUNDS_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"run_id": sandbox.run_id, "backends": sandbox.versions,
                                    "agents": [a.__dict__ for a in sandbox.agents]}, indent=2) + "\n")
    todo = []
    for number in range(1, sandbox.settings.rounds + 1):
        path = round_file(out_dir, number)
        if path.exists() and not todo:
            sandbox.remember(read_round(path))
        else:
            todo.append(number)
    if len(todo) < sandbox.settings.rounds:
        print(f"sandbox run {sandbox.run_id}: resuming after round {sandbox.settings.rounds - len(todo)}", flush=True)
    return todo


def play_round(sandbox: Sandbox, out_dir: Path, number: int) -> list[dict]:
    """Run one round, write its file whole, and let the agents remember it."""
    records = sandbox.run_round(number)
    path = round_file(out_dir, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records))
    os.replace(staging, path)
    sandbox.remember(records)
    return records


INTERACTIONS_FILE = "interactions.jsonl"
FEEDBACK_FILE = "feedback.jsonl"
SUMMARY_FILE = "summary.json"


def finish(sandbox: Sandbox, out_dir: Path) -> dict:
    """Join the rounds into one log, validate it (GX), derive training rows, write the summary."""
    from components.sandbox.derive import derive_rows, quality
    from components.sandbox.record_suite import read_records, validate

    log_file = out_dir / INTERACTIONS_FILE
    log_file.write_text("".join(round_file(out_dir, n).read_text() for n in range(1, sandbox.settings.rounds + 1)))
    records = read_records(log_file)
    validate(records, str(log_file))
    rows = derive_rows(records, sandbox.settings.negative_max_score)
    (out_dir / FEEDBACK_FILE).write_text("".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    summary = {"run_id": sandbox.run_id, "rounds": sandbox.settings.rounds, "agents": len(sandbox.agents),
               "backends": sandbox.versions, "derived_rows": len(rows),
               "pairs": len({row["pair_id"] for row in rows if row.get("pair_id")}),
               **quality(records, sandbox.settings.negative_max_score)}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def simulate(params: Params, out_dir: Path) -> dict:
    """Every round not yet logged, then :func:`finish`: what the DVC stage and benchmarks run
    (the Prefect flow runs the same steps, one task per round)."""
    sandbox = open_sandbox(params)
    for number in prepare(sandbox, out_dir):
        play_round(sandbox, out_dir, number)
        print(f"sandbox round {number}/{sandbox.settings.rounds} done", flush=True)
    return finish(sandbox, out_dir)
