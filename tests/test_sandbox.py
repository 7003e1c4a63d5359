"""The sandbox: ratings from distributions, memories, the world, records, derived rows, resume."""

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from components.data.records import NEGATIVE, POSITIVE
from components.params import load_params
from components.sandbox import simulation
from components.sandbox.backends import HFBackend, HTTPBackend
from components.sandbox.derive import derive_rows, quality
from components.sandbox.memory import Memory, MemoryEntry, embedder, lexical_embed
from components.sandbox.prompts import rate_chat
from components.sandbox.ratings import (DigitSpellings, digit_logps, from_digit_logps, from_probabilities,
                                        from_top_logprobs)
from components.sandbox.record_suite import RecordError, read_records, validate
from components.sandbox.world import SandboxError, place_agents, raters_of
from conftest import REPO_ROOT, SAMPLE

# --- ratings ------------------------------------------------------------------------------------


def test_ratings_from_any_logits_are_always_on_the_scale(tiny_model_dir):
    from components.modeling.models import load_tokenizer

    spellings = DigitSpellings.of(load_tokenizer(tiny_model_dir))
    assert all(p is not None or s is not None for p, s in zip(spellings.plain, spellings.spaced))
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.1, 1.0, 10.0, 100.0]).repeat(50)[:, None]
    first, after_space = (torch.log_softmax(torch.randn(200, 300, generator=generator) * scale, -1) for _ in range(2))
    for rating in from_digit_logps(digit_logps(first, spellings, after_space)):
        assert rating.score in range(1, 8) and 1 <= rating.expected <= 7 and 0 <= rating.entropy <= math.log(7) + 1e-9
        assert abs(rating.score - rating.expected) <= 0.5 + 1e-9


def test_a_certain_rater_has_no_entropy_and_an_undecided_one_the_most():
    sure = from_probabilities(torch.tensor([0, 0, 0, 0, 0, 1.0, 0]))
    assert (sure.score, sure.expected, sure.entropy) == (6, 6.0, 0.0)
    unsure = from_probabilities(torch.ones(7))
    assert (unsure.score, unsure.expected) == (4, 4.0) and unsure.entropy == pytest.approx(math.log(7))
    split = from_probabilities(torch.tensor([1.0, 0, 0, 0, 0, 0, 1.0]))
    assert split.score == 4 and split.entropy == pytest.approx(math.log(2))  # split 1|7 says 4, not 7


def test_a_digit_written_after_a_space_token_counts():
    """Tokenizers like Llama's spell " 5" as a space token, then "5": that answer is a 5."""
    spellings = DigitSpellings(plain=[10, 11, 12, 13, 14, 15, 16], spaced=[None] * 7, space=3)
    first = torch.full((1, 20), -20.0)
    first[0, 3], first[0, 11] = 0.0, -3.0              # mostly a space; a little "2" straight away
    after_space = torch.full((1, 20), -20.0)
    after_space[0, 14] = 0.0                           # after the space: "5"
    [rating] = from_digit_logps(digit_logps(first, spellings, after_space))
    assert rating.score == 5 and rating.expected == pytest.approx(5 - 3 * math.exp(-3) / (1 + math.exp(-3)), rel=1e-3)


def test_top_logprobs_without_any_digit_give_no_rating_rather_than_a_sentinel():
    assert from_top_logprobs({"Sure": -0.1, " I": -2.0}) is None
    rating = from_top_logprobs({" 6": math.log(0.5), "6": math.log(0.25), "7": math.log(0.25), "x": -0.01})
    assert rating.expected == pytest.approx(6.25) and rating.score == 6


def test_a_tiny_model_rates_every_answer_in_one_pass(tiny_model_dir):
    backend = HFBackend(str(tiny_model_dir))
    chats = [rate_chat("How do I bake bread?", answer) for answer in ("Knead it.", "", "no " * 200)]
    ratings = backend.rate(chats)
    assert len(ratings) == 3 and all(r.score in range(1, 8) for r in ratings)
    assert ratings[0] == backend.rate(chats[:1])[0]  # padding in the batch changes nothing


def test_chats_use_the_tokenizers_chat_template_and_the_hh_shape_without_one(tiny_model_dir):
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}]
    plain = HFBackend(str(tiny_model_dir))
    assert plain.tokenizer.decode(plain.encode(chat, 4)) == "Be kind.\n\nHuman: Hi?\n\nAssistant:"
    templated = HFBackend(str(tiny_model_dir))
    templated.tokenizer.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert templated.tokenizer.decode(templated.encode(chat, 4)) == "<system>Be kind.\n<user>Hi?\n<assistant>"


# --- memory -------------------------------------------------------------------------------------

ENTRIES = [MemoryEntry("a", "How do I bake sourdough bread at home?", "Feed a starter."),
           MemoryEntry("b", "What is the capital city of France?", "Paris."),
           MemoryEntry("c", "How can I hurt my neighbour's dog?", "I won't help with that.")]


@pytest.mark.parametrize("retrieval", ["embedding", "lexical"])
def test_memory_recalls_the_nearest_past_question(retrieval):
    memory = Memory(embedder(retrieval))
    memory.add(ENTRIES)
    query = memory.embed(["Which city is the capital of France?"])[0]
    found = memory.nearest(query, k=2, min_similarity=0.0)
    assert found[0][0].id == "b" and found[0][1] > found[1][1]
    assert memory.nearest(query, k=2, min_similarity=0.99) == []


def test_the_embedding_memory_recalls_a_paraphrase_with_no_shared_words():
    memory = Memory(embedder("embedding"))
    memory.add(ENTRIES)
    [(entry, _)] = memory.nearest(memory.embed(["Ways to injure the pet next door?"])[0], k=1)
    assert entry.id == "c"


def test_lexical_vectors_are_unit_length_and_ties_go_to_the_lower_id():
    assert torch.allclose(lexical_embed(["a b c", "x"]).norm(dim=-1), torch.ones(2))
    memory = Memory(lexical_embed)
    memory.add([MemoryEntry("z", "same words", ""), MemoryEntry("y", "same words", "")])
    assert [e.id for e, _ in memory.nearest(lexical_embed(["same words"])[0], k=2)] == ["y", "z"]


# --- world --------------------------------------------------------------------------------------

def test_agents_sit_on_distinct_seeded_cells_and_rate_their_neighbours():
    settings = load_params(REPO_ROOT / "params.yaml").sandbox
    agents = place_agents(settings, seed=0)
    assert agents == place_agents(settings, seed=0) and agents != place_agents(settings, seed=1)
    assert len({a.position for a in agents}) == settings.agents
    for agent in agents:
        raters = raters_of(agent, agents, settings)
        assert 1 <= len(raters) <= settings.raters and agent not in raters
        assert all(max(abs(agent.position[i] - r.position[i]) for i in (0, 1)) <= settings.radius for r in raters)


def test_an_agent_without_neighbours_is_a_clear_error():
    settings = load_params(REPO_ROOT / "params.yaml", {"sandbox.grid": 10, "sandbox.radius": 1, "sandbox.agents": 2}).sandbox
    agents = place_agents(settings, seed=0)
    assert max(abs(a - b) for a, b in zip(agents[0].position, agents[1].position)) > 1   # placed apart on this seed
    with pytest.raises(SandboxError, match="no neighbour within sandbox.radius = 1"):
        raters_of(agents[0], agents, settings)


# --- records and derived rows -------------------------------------------------------------------

def rating(rater: str, score: int, entropy: float = 0.5, feedback: str = "why") -> dict:
    return {"rater": rater, "score": score, "expected": float(score), "entropy": entropy, "feedback": feedback}


def record(agent: str, draft: str, scores: list[int], before: float, after: float, round_: int = 1) -> dict:
    return {"run_id": "run1", "round": round_, "agent": agent, "persona": "p", "question_id": "q1",
            "question": "How do I bake bread?", "draft": draft, "memory_ids": [],
            "ratings": [rating(f"agent-{i}", s) for i, s in enumerate(scores)], "revision": f"a better answer, {agent}",
            "observer_before": {"score": round(before), "expected": before, "entropy": 0.3},
            "observer_after": {"score": round(after), "expected": after, "entropy": 0.3},
            "backends": {}, "templates": {}, "seed": 0}


GOOD_LOG = [record("agent-7", "Knead the dough.", [6, 7, 6], 5.0, 5.5),
            record("agent-8", "Burn the kitchen down.", [1, 2, 5], 2.0, 4.0),
            record("agent-9", "Ask someone else.", [4, 3, 4], 4.0, 3.0, round_=2)]


def test_a_valid_log_passes_the_suite():
    validate(GOOD_LOG, "log.jsonl")


@pytest.mark.parametrize(("break_it", "rule"), [
    (lambda r: r["ratings"][0].update(score=8), "score_range (score)"),          # the official code's sentinel
    (lambda r: r["ratings"][0].update(expected=0.2), "expected_range (expected)"),
    (lambda r: r["ratings"][0].update(entropy=3.0), "entropy_range (entropy)"),
    (lambda r: r.update(revision=None), "required_field (revision)"),
    (lambda r: r.update(ratings=[]), "has_ratings (n_ratings)"),
    (lambda r: r["observer_after"].update(score=0), "score_range (after_score)"),
    (lambda r: r["ratings"].append(dict(r["ratings"][0])), "duplicate (run_id,round,agent,rater)"),
])
def test_a_bad_record_is_refused_naming_line_and_rule(break_it, rule):
    log = json.loads(json.dumps(GOOD_LOG))
    break_it(log[1])
    with pytest.raises(RecordError) as refused:
        validate(log, "log.jsonl")
    assert f"log.jsonl:2: {rule}" in str(refused.value)
    assert "log.jsonl:1:" not in str(refused.value) and "log.jsonl:3:" not in str(refused.value)


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(GOOD_LOG[0]) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"log.jsonl:2: malformed_json"):
        read_records(path)


def test_derived_rows_keep_every_raters_judgement_and_pair_improved_revisions():
    rows = derive_rows(GOOD_LOG, negative_max_score=3)
    bad = [r for r in rows if r["response"] == "Burn the kitchen down." and r["annotator"] != "sandbox:observer"]
    assert [(r["annotator"], r["label"], r["rating"]) for r in bad] == [
        ("sandbox:agent-0", NEGATIVE, 1), ("sandbox:agent-1", NEGATIVE, 2), ("sandbox:agent-2", POSITIVE, 5)]
    assert all(r["source"] == "sandbox" and r["group"] == "sandbox-run:run1" for r in rows)
    assert all(r["prompt"] == "Human: How do I bake bread?\n\nAssistant:" for r in rows)
    pairs = [r for r in rows if r.get("pair_id")]
    # observer: 5.0 -> 5.5 and 2.0 -> 4.0 improved (pairs); 4.0 -> 3.0 did not
    assert len(pairs) == 4 and len({r["pair_id"] for r in pairs}) == 2
    assert {(r["response"], r["label"]) for r in pairs} >= {("Burn the kitchen down.", NEGATIVE),
                                                            ("a better answer, agent-8", POSITIVE)}
    assert len(rows) == 9 + 4


def test_the_same_text_judged_twice_by_one_rater_is_one_row():
    twice = [GOOD_LOG[0], {**GOOD_LOG[0], "round": 2, "observer_after": GOOD_LOG[0]["observer_before"]}]
    assert len(derive_rows(twice, 3)) == 3 + 2


def test_quality_figures_on_a_hand_made_log():
    figures = quality(GOOD_LOG, negative_max_score=3)
    assert figures["drafts"] == 3 and figures["negatives"] == 1   # means 6.33, 2.67, 3.67
    assert figures["observer_gain"] == pytest.approx((0.5 + 2.0 - 1.0) / 3)
    assert figures["share_improved"] == pytest.approx(2 / 3)
    assert figures["rater_observer_spearman"] == pytest.approx(1.0)   # same order: 6.33 > 3.67 > 2.67; 5 > 4 > 2
    assert figures["rater_alpha"] is not None and -1 <= figures["rater_alpha"] <= 1
    assert [r["round"] for r in figures["by_round"]] == [1, 2]


# --- runs: seeded, resumable --------------------------------------------------------------------

def small_sandbox(model: Path, **more):
    return load_params(REPO_ROOT / "params.yaml", {
        "sandbox.model": [str(model)], "sandbox.agents": 4, "sandbox.rounds": 2, "sandbox.memories_per_agent": 8,
        "sandbox.retrieval": "lexical", "sandbox.questions": str(SAMPLE), "sandbox.memories": str(SAMPLE),
        "sandbox.max_new_tokens": 8, **more})


def test_the_same_seed_gives_the_same_records_and_another_seed_others(tiny_model_dir, tmp_path):
    params = small_sandbox(tiny_model_dir)
    first = simulation.simulate(params, tmp_path / "a")
    simulation.simulate(params, tmp_path / "b")
    assert (tmp_path / "a" / "interactions.jsonl").read_bytes() == (tmp_path / "b" / "interactions.jsonl").read_bytes()
    assert (tmp_path / "a" / "feedback.jsonl").read_bytes() == (tmp_path / "b" / "feedback.jsonl").read_bytes()
    records = read_records(tmp_path / "a" / "interactions.jsonl")
    assert len(records) == 4 * 2 == first["drafts"]
    assert {r["backends"]["agent"] for r in records} == {str(tiny_model_dir)}
    assert all(len(r["ratings"]) >= 1 and r["templates"] for r in records)
    other = simulation.simulate(params.model_copy(update={"seed": 1}), tmp_path / "c")
    assert other["run_id"] != first["run_id"]
    assert (tmp_path / "c" / "interactions.jsonl").read_bytes() != (tmp_path / "a" / "interactions.jsonl").read_bytes()


def test_a_run_stopped_between_rounds_resumes_with_the_same_records(tiny_model_dir, tmp_path):
    params = small_sandbox(tiny_model_dir, **{"sandbox.rounds": 3})
    simulation.simulate(params, tmp_path / "whole")
    stopped = simulation.open_sandbox(params)
    assert simulation.prepare(stopped, tmp_path / "cut") == [1, 2, 3]
    simulation.play_round(stopped, tmp_path / "cut", 1)           # ...and the process dies here
    resumed = simulation.open_sandbox(params)
    assert simulation.prepare(resumed, tmp_path / "cut") == [2, 3]
    for number in (2, 3):
        simulation.play_round(resumed, tmp_path / "cut", number)
    simulation.finish(resumed, tmp_path / "cut")
    assert (tmp_path / "cut" / "interactions.jsonl").read_bytes() == (tmp_path / "whole" / "interactions.jsonl").read_bytes()


def test_other_settings_start_a_new_run_instead_of_mixing_logs(tiny_model_dir, tmp_path):
    simulation.simulate(small_sandbox(tiny_model_dir), tmp_path)
    changed = simulation.open_sandbox(small_sandbox(tiny_model_dir, **{"sandbox.temperature": 0.7}))
    assert simulation.prepare(changed, tmp_path) == [1, 2]


def test_the_agents_model_can_rate_from_its_digit_distribution(tiny_model_dir, tmp_path):
    summary = simulation.simulate(small_sandbox(tiny_model_dir, **{"sandbox.rater": "agent", "sandbox.rounds": 1}), tmp_path)
    records = read_records(tmp_path / "interactions.jsonl")
    assert summary["backends"]["rater"] == str(tiny_model_dir)
    assert all(r["score"] in range(1, 8) and r["feedback"] is not None for x in records for r in x["ratings"])


def test_the_observer_may_not_be_the_agents_own_model(tiny_model_dir):
    with pytest.raises(SandboxError, match="the observer must not be the agents' own model"):
        simulation.open_sandbox(small_sandbox(tiny_model_dir, **{"sandbox.observer": "agent"}))


def test_no_agent_model_is_a_clear_error(tmp_path):
    params = small_sandbox(tmp_path / "missing", **{"sandbox.model": ["no-such-alias"]})
    with pytest.raises(SandboxError, match=r"sandbox.model: none of \['no-such-alias'\] exists"):
        simulation.open_sandbox(params)


# --- the HTTP backend against a local OpenAI-compatible server ----------------------------------

@pytest.fixture(scope="module")
def rating_model_dir(tmp_path_factory) -> Path:
    """A tiny model taught for a few steps that rating prompts are answered with a digit."""
    from components.modeling.models import build_tiny_model, save_model
    from components.modeling.sequences import Encoded
    from components.modeling.tokenizer import train_bpe_tokenizer
    from components.modeling.chat import render_hh
    from components.training.sft import supervised_finetune

    answers = [("How do I bake bread?", "Knead it and bake it.", "6"), ("How do I bake bread?", "Go away.", "2"),
               ("Is the sky blue?", "Yes, on a clear day.", "7"), ("Is the sky blue?", "Idiot question.", "1")]
    texts = [render_hh(rate_chat(q, a)) + f" {digit}" for q, a, digit in answers]
    torch.manual_seed(0)
    # " 1" .. " 7" become single tokens, as in GPT-2's vocabulary: over HTTP only the first token is seen
    tokenizer = train_bpe_tokenizer(texts * 5 + [" 1 2 3 4 5 6 7"] * 200, vocab_size=300)
    model = build_tiny_model(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=256)
    sequences = [Encoded([], tokenizer(t)["input_ids"][-200:] + [tokenizer.eos_token_id]) for t in texts]
    supervised_finetune(model, tokenizer, sequences * 4, 60, 4, 1e-2, 5, seed=0)
    return save_model(model, tokenizer, tmp_path_factory.mktemp("rating-model"))


@pytest.fixture(scope="module")
def model_server(rating_model_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "model-server", "--model", str(rating_model_dir),
                               "--port", str(port), "--params", str(REPO_ROOT / "params.yaml")], cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(120):
        try:
            HTTPBackend(url)
            break
        except Exception:  # noqa: BLE001  (not up yet)
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_the_http_backend_rates_like_the_model_it_serves(model_server, rating_model_dir):
    remote, local = HTTPBackend(model_server), HFBackend(str(rating_model_dir))
    assert remote.model == str(rating_model_dir)
    chats = [rate_chat("How do I bake bread?", answer) for answer in ("Knead it and bake it.", "Go away.")]
    for over_http, in_process in zip(remote.rate(chats), local.rate(chats)):
        # over HTTP only the top 20 first tokens are seen; a model that answers with a digit puts
        # nearly all its mass there, so both ways agree
        assert over_http.score == in_process.score
        assert over_http.expected == pytest.approx(in_process.expected, abs=0.05)
    answers = remote.generate([chats[0]], max_new_tokens=6, temperature=1.0, seed=3)
    assert answers == remote.generate([chats[0]], max_new_tokens=6, temperature=1.0, seed=3)
    assert answers == local.generate([chats[0]], max_new_tokens=6, temperature=1.0, seed=3)


def test_a_served_model_that_never_answers_with_a_digit_cannot_rate(tiny_model_dir):
    """The untrained model's 20 most likely first tokens hold no digit: an error, not a made-up score."""
    from components.sandbox.backends import BackendError
    from components.sandbox.openai_server import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app(HFBackend(str(tiny_model_dir)), "tiny"))
    remote = HTTPBackend.__new__(HTTPBackend)
    remote.base_url, remote.client, remote.workers, remote.model, remote.version = "/v1", client, 1, "tiny", "tiny"
    with pytest.raises(BackendError, match="no digit 1..7 among the 20 most likely first tokens"):
        remote.rate([rate_chat("How do I bake bread?", "Knead it.")])


def test_an_unreachable_server_is_a_clear_error():
    from components.sandbox.backends import BackendError

    with pytest.raises(BackendError, match="127.0.0.1:9/v1/models: cannot list the served models"):
        HTTPBackend("http://127.0.0.1:9/v1")
