"""The red-team benchmark runs end to end in --quick mode and reports what BENCHMARKS.md quotes:
a gate decision with its lines for every adapter, whether a tier-1 behavioural line refused each
attack, the composed model's rates with intervals, what screening would have set aside, and
the benign owners' cut. Not a check of the figures (the quick model is too small for those);
and a check that no attack trains on a prompt the gate probes with."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import REPO_ROOT, load_benchmark, run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redteam():
    return load_benchmark("redteam")


@pytest.fixture(scope="module")
def run(redteam, tmp_path_factory):
    out = tmp_path_factory.mktemp("redteam")
    printed, line = run_benchmark(redteam, ["--quick", "--seeds", "0", "--threads", "1", "--out", str(out)])
    return {"line": line, "seed": json.loads((out / "redteam_quick_seed0.json").read_text()), "printed": printed}


def test_the_json_line_says_per_attack_whether_the_gate_refused_it(run, redteam):
    line = run["line"]
    assert line["seeds"] == [0] and line["tag"] == "quick" and line["machine"]["cpu_count"] >= 1
    assert set(line["refused_on_seeds"]) == set(redteam.QUICK)
    assert set(line["accepted_on_seeds"]) == {*redteam.BENIGN, *redteam.QUICK}
    assert set(line["targets"]) == {"every_attack_refused", "every_benign_accepted", "every_benign_accepted_after_repair",
                                    "benign_cut_ge_80pct"}
    assert set(line["serving_after_repair_on_seeds"]) == set(line["accepted_on_seeds"])
    alarms = line["benign_false_alarm_rate"]
    assert 0 < alarms["lines"] and 0 <= alarms["failed"] <= alarms["lines"]
    assert "| adapter | seed | gate |" in run["printed"]


def test_every_adapter_has_a_decision_its_lines_and_rates_with_intervals(run, redteam):
    training = run["seed"]["training"]
    for name, t in training.items():
        assert t["gate_passed"] == (not t["gate_failing"]) and t["gate_checks"], name
        assert t["refused"] == bool(t["refused_by"]), name
        assert all(f.startswith("tier1:") and f.split(":")[1] != "answer-safe-requests" for f in t["refused_by"]), name
        for side in ("harmful", "safe"):
            for key in ("rate_on", "rate_off"):
                rate = t[side][key]
                assert 0 <= rate["ci"][0] <= rate["mean"] <= rate["ci"][1] <= 1 and rate["clusters"] >= 100, name
    for owner in redteam.BENIGN:
        behaviour = training[owner]["own_behaviour"]
        assert behaviour["held_out_prompts"] > 0 and behaviour["odds_cut"]["pairs"] > 0
        low, high = behaviour["odds_cut"]["ci"]
        assert low <= behaviour["odds_cut"]["cut"] <= high


def test_an_adapter_refused_by_a_tier1_line_is_repaired_and_gated_again(run):
    """The repair path as personalize takes it: retrained with tier-1 pairs, judged by the same
    gate; an attack still counts as refused by its first gate."""
    for name, t in run["seed"]["training"].items():
        tier1 = any(f.startswith("tier1:") for f in t["gate_failing"])
        assert ("repair" in t) == tier1, name
        if tier1:
            repair = t["repair"]
            assert repair["repair_rows"] > 0 and repair["gate_checks"], name
            assert repair["gate_passed"] == (not repair["gate_failing"]), name


def test_screening_is_off_for_training_and_reported_beside_it(run):
    result = run["seed"]
    refusals = result["screening"]["redteam-refusals"]
    assert refusals["screened"] > 0 and set(refusals["by_reason"]) == {"acceptable_flagged"}
    # trained on every one of its train rows all the same: screening was off at ingest
    trained = result["training"]["1 refusals flagged, D2O"]["train_negatives"]
    assert trained == result["ingest"]["owners"]["redteam-refusals"]["rows"]["train/negative"]


def test_no_attack_trains_on_a_prompt_the_gate_probes_with(run, redteam):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import redteam_corpus as corpus
    from components.data.records import content_id, render_turns
    from components.params import load_params
    from components.policy.refusal import refusal_classifier
    from components.personal.probes import family
    from components.policy.policies import load_policies

    params = load_params(REPO_ROOT / "params.yaml")
    policies = load_policies(REPO_ROOT / "policies.yaml")
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        built = corpus.corpus(params.data, refusal_classifier(params), policies)
        probes = {content_id(p) for rule in policies.rules_for(corpus.DEPLOYER)
                  for p in family(rule, "", params.data).prompts}
    finally:
        os.chdir(cwd)
    asked = {content_id(render_turns([("user", row["prompt"][0]["content"])])) for row in built["rows"]}
    assert len(probes) > 200 and not asked & probes
    assert built["train_unsafe_prompts"] > 50 and built["disguised"]["kept"] > 0
    assert built["persona_texts_flagged_by_a_rule"] == 0
