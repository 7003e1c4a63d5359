"""The registry gate: may a candidate replace the reference, then the champion?"""

from __future__ import annotations

import pytest

from components.evaluation.gate import decide
from components.params import GateParams

GATE = GateParams(max_neg_logp_delta=0.0, min_pref_accuracy=0.5, max_pos_drop=0.5,
                  min_improvement=0.0, pref_tolerance=0.02)
GOOD = {"neg_logp_delta": -0.3, "pos_logp_delta": -0.1, "pref_accuracy": 0.62}


def _failed(decision) -> list[str]:
    return [c for c in decision.checks if c.startswith("FAIL")]


def test_candidate_meeting_every_rule_passes_against_the_reference():
    decision = decide(GOOD, GATE)
    assert decision.passed
    assert decision.against == "reference"
    assert len(decision.checks) == 3
    assert all(c.startswith("PASS ") for c in decision.checks)
    for metric in ("neg_logp_delta", "pref_accuracy", "pos_logp_delta"):
        assert any(metric in c for c in decision.checks), metric


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("neg_logp_delta", 0.05),    # negatives became more likely than under the reference
        ("neg_logp_delta", 0.0),     # not pushed down at all: the bound is strict
        ("pref_accuracy", 0.45),     # ranks pairs worse than chance
        ("pos_logp_delta", -0.6),    # positives dropped more than max_pos_drop
    ],
)
def test_each_rule_failing_alone_fails_the_decision(metric, value):
    decision = decide({**GOOD, metric: value}, GATE)
    assert not decision.passed
    failed = _failed(decision)
    assert len(failed) == 1, decision.checks
    assert failed[0].startswith(f"FAIL {metric} "), failed
    assert decision.as_tags()["gate.passed"] == "false"


def test_bounds_at_the_limit_pass_where_the_rule_is_inclusive():
    edge = {"neg_logp_delta": -1e-6, "pref_accuracy": 0.5, "pos_logp_delta": -0.5}
    assert decide(edge, GATE).passed


def test_checks_show_the_values_and_thresholds():
    decision = decide({**GOOD, "pref_accuracy": 0.45}, GATE)
    assert "FAIL pref_accuracy 0.450 >= 0.5" in decision.checks


def test_against_champion_a_worse_negative_delta_fails():
    champion = {**GOOD, "neg_logp_delta": -0.4}
    decision = decide(GOOD, GATE, champion, "champion v3")   # -0.3 is worse than -0.4
    assert not decision.passed
    failed = _failed(decision)
    assert len(failed) == 1
    assert failed[0].startswith("FAIL neg_logp_delta") and "champion" in failed[0]
    assert decision.against == "champion v3"


def test_against_champion_equal_metrics_pass_without_required_improvement():
    decision = decide(GOOD, GATE, dict(GOOD), "champion v1")
    assert decision.passed, decision.checks
    assert len(decision.checks) == 5       # the reference rules plus two champion rules
    # ... but not when the candidate must improve on the champion by a margin
    strict = GateParams(min_improvement=0.05)
    decision = decide(GOOD, strict, dict(GOOD), "champion v1")
    assert not decision.passed
    assert _failed(decision)[0].startswith("FAIL neg_logp_delta")


def test_against_champion_pref_accuracy_below_tolerance_fails():
    champion = {**GOOD, "pref_accuracy": 0.70}
    within = decide({**GOOD, "pref_accuracy": 0.69}, GATE, champion, "champion v2")   # floor 0.68
    assert within.passed, within.checks
    below = decide({**GOOD, "pref_accuracy": 0.67}, GATE, champion, "champion v2")
    assert not below.passed
    failed = _failed(below)
    assert len(failed) == 1
    assert failed[0].startswith("FAIL pref_accuracy") and "champion" in failed[0]


def test_a_reference_rule_still_applies_when_beating_the_champion():
    champion = {"neg_logp_delta": 0.2, "pos_logp_delta": -0.1, "pref_accuracy": 0.4}
    decision = decide({**GOOD, "neg_logp_delta": 0.1}, GATE, champion, "champion v1")
    assert not decision.passed
    assert [c.split()[1] for c in _failed(decision)] == ["neg_logp_delta"]


def test_as_tags_records_the_decision_for_model_version_tags():
    passed = decide(GOOD, GATE, dict(GOOD), "champion v3").as_tags()
    assert passed["gate.passed"] == "true"
    assert passed["gate.against"] == "champion v3"
    assert passed["gate.checks"].count("PASS") == 5

    failed = decide({**GOOD, "pos_logp_delta": -2.0}, GATE)
    tags = failed.as_tags()
    assert tags == {"gate.passed": "false", "gate.against": "reference", "gate.checks": "; ".join(failed.checks)}
    assert all(isinstance(v, str) for v in tags.values())
