"""The registry gate on constructed per-pair evidence: intervals, pairing, groups, fail closed."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from components.evaluation.gate import decide
from components.params import GateParams, GroupGateParams

GATE = GateParams(min_pairs=100)


def evidence(n: int = 150, pos: float = -0.05, neg: float = -0.30, noise: float = 0.2, seed: int = 0,
             group: str = "hh-rlhf", ids: int = 0) -> pd.DataFrame:
    """Per-pair evidence as ``metrics.pair_evidence`` writes it, with known means."""
    rng = np.random.default_rng(seed)
    pos_values = pos + rng.normal(0, noise, n)
    neg_values = neg + rng.normal(0, noise, n)
    separation = pos_values - neg_values
    return pd.DataFrame({
        "pair_id": [f"p{ids + i}" for i in range(n)], "prompt_id": [f"q{ids + i}" for i in range(n)],
        "source": group, "annotator": "unknown", "policy_tier": "global", "group": "",
        "pos_logp_delta": pos_values, "neg_logp_delta": neg_values, "separation": separation,
        "pref_accuracy": (separation > 0).astype(float),
    })


def shifted(frame: pd.DataFrame, metric_shifts: dict[str, float]) -> pd.DataFrame:
    out = frame.copy()
    for metric, shift in metric_shifts.items():
        out[metric] = out[metric] + shift
    return out


def failed(decision) -> list[str]:
    return [line for line in decision.checks if line.startswith("FAIL")]


def test_a_candidate_that_separates_passes_against_the_reference_and_says_n_b_and_seed():
    decision = decide(evidence(), GATE, seed=3)
    assert decision.passed, decision.checks
    assert decision.against == "reference"
    separation = next(line for line in decision.checks if line.startswith("PASS separation"))
    assert "n=150" in separation and "B=2000" in separation and "seed=3" in separation and "[" in separation
    assert decision.figures["gate.separation.low"] > 0


def test_negatives_down_as_much_as_positives_is_not_separation():
    """The issue's case: negatives went down, but positives went down as much."""
    decision = decide(evidence(pos=-0.24, neg=-0.24), GATE, seed=0)
    assert not decision.passed
    assert [line.split()[1] for line in failed(decision)] == ["separation"]


def test_too_few_pairs_blocks_promotion_and_says_how_many():
    decision = decide(evidence(n=7, noise=0.01), GATE, seed=0)
    assert not decision.passed
    assert any("only 7" in line and "gate.min_pairs 100" in line for line in failed(decision))


def test_positives_beyond_the_budget_fail():
    decision = decide(evidence(pos=-0.7, neg=-1.2), GATE.model_copy(update={"max_pos_drop": 0.5}), seed=0)
    assert [line.split()[1] for line in failed(decision)] == ["pos_logp_delta"]


def test_a_candidate_equal_to_the_champion_is_not_significantly_better():
    pairs = evidence()
    decision = decide(pairs, GATE, seed=0, champion=pairs.copy(), champion_name="champion v1")
    assert not decision.passed and decision.against == "champion v1"
    primary = failed(decision)
    assert len(primary) == 1 and primary[0].startswith("FAIL separation vs champion v1")


def test_a_consistent_small_gain_passes_because_the_comparison_is_paired():
    """About +0.01 per pair is invisible next to the spread between pairs (sd 0.28: each model's
    own interval is ±0.045 wide), yet clear pair by pair."""
    champion = evidence(seed=1)
    gain = 0.01 + np.random.default_rng(9).normal(0, 0.005, len(champion))
    candidate = champion.assign(pos_logp_delta=champion["pos_logp_delta"] + gain,
                                separation=champion["separation"] + gain)
    decision = decide(candidate, GATE, seed=0, champion=champion, champion_name="champion v1")
    assert decision.passed, decision.checks
    assert decision.figures["gate.separation.high"] - decision.figures["gate.separation.low"] > 0.05
    assert 0.008 < decision.figures["gate.improvement.separation.low"] < 0.01


def test_champion_lines_show_its_own_value_and_the_tolerance_separately():
    champion = evidence(seed=2)
    candidate = shifted(champion, {"separation": 0.05, "pref_accuracy": -0.2})
    decision = decide(candidate, GATE, seed=0, champion=champion, champion_name="champion v4")
    assert not decision.passed
    line = failed(decision)[0]
    assert line.startswith("FAIL pref_accuracy vs champion v4")
    assert f"champion {champion['pref_accuracy'].mean():.4f}" in line and "tolerance 0.02" in line
    assert "significantly worse beyond the tolerance" in line


def test_a_champion_that_cannot_be_scored_fails_closed():
    decision = decide(evidence(), GATE, seed=0, champion=None, champion_name="champion v2",
                      not_comparable="its tokenizer differs from the reference's")
    assert not decision.passed
    assert any("cannot compare with champion v2" in line and "tokenizer" in line for line in failed(decision))


def test_candidate_and_champion_on_different_pairs_is_an_error_not_a_comparison():
    with pytest.raises(ValueError, match="same held-out pairs"):
        decide(evidence(), GATE, seed=0, champion=evidence(ids=1000), champion_name="champion v1")


def _two_groups() -> pd.DataFrame:
    helped = evidence(n=120, pos=0.0, neg=-0.8, group="forum", seed=4)
    hurt = evidence(n=60, pos=-0.3, neg=0.0, group="chat", seed=5, ids=500)
    return pd.concat([helped, hurt], ignore_index=True)


def test_worst_group_blocks_a_candidate_that_helps_one_group_and_hurts_another():
    pairs = _two_groups()
    pooled = decide(pairs, GATE, seed=0)
    assert pooled.passed, pooled.checks            # pooled separation is clearly positive
    assert pooled.rule == "pooled"
    worst = GATE.model_copy(update={"groups": GroupGateParams(by="source", rule="worst_group", min_pairs=30)})
    decision = decide(pairs, worst, seed=0)
    assert not decision.passed
    assert [line for line in failed(decision)] == [next(l for l in decision.checks if "source=chat" in l)]
    assert "may be meaningfully worse (worst_group)" in failed(decision)[0]
    assert decision.as_tags()["gate.groups.rule"] == "worst_group"
    assert set(decision.groups["group"]) == {"chat", "forum"}
    assert decision.groups.set_index("group").loc["chat", "ci_high"] < 0


def test_worst_group_against_the_champion_uses_paired_per_group_gains():
    champion = _two_groups()
    candidate = champion.copy()
    forum = candidate["source"] == "forum"
    candidate.loc[forum, "separation"] += 0.3
    candidate.loc[~forum, "separation"] -= 0.1
    worst = GATE.model_copy(update={"groups": GroupGateParams(by="source", rule="worst_group", min_pairs=30)})
    decision = decide(candidate, worst, seed=0, champion=champion, champion_name="champion v1")
    chat = next(line for line in decision.checks if "source=chat" in line)
    assert chat.startswith("FAIL") and "vs champion -0.1000" in chat


def test_worst_group_is_non_inferiority_a_small_harm_whose_interval_crosses_zero_still_fails():
    """A group whose interval straddles 0 shows no evidence of harm, but it cannot rule out a harm
    beyond the margin either: that fails. A group measurably within the margin passes."""
    helped = evidence(n=300, pos=0.0, neg=-0.3, noise=0.2, group="forum")
    unsure = evidence(n=40, pos=-0.02, neg=0.0, noise=0.3, seed=3, group="chat", ids=900)
    worst = GATE.model_copy(update={"groups": GroupGateParams(by="source", rule="worst_group", min_pairs=30,
                                                              max_regression=0.03)})
    decision = decide(pd.concat([helped, unsure], ignore_index=True), worst, seed=0)
    chat = decision.groups.set_index("group").loc["chat"]
    assert chat["ci_low"] < -0.03 < 0 < chat["ci_high"]                   # not harmful at 95%, yet not shown safe
    assert failed(decision) == [next(l for l in decision.checks if "source=chat" in l)]
    assert "< -0.03 (gate.groups.max_regression)" in failed(decision)[0]
    precise = evidence(n=400, pos=-0.005, neg=0.0, noise=0.05, seed=4, group="chat", ids=900)
    within = decide(pd.concat([helped, precise], ignore_index=True), worst, seed=0)
    assert within.passed, within.checks
    assert any("source=chat" in l and ">= -0.03" in l and "not meaningfully worse" in l for l in within.checks)


def test_grouping_by_group_falls_back_to_the_source_for_rows_without_one():
    rows = pd.concat([evidence(n=50, group="hh-rlhf"), evidence(n=50, group="xstest", ids=100)], ignore_index=True)
    rows.loc[rows["source"] == "xstest", "group"] = ["xstest-safe"] * 25 + ["xstest-unsafe"] * 25
    decision = decide(rows, GATE.model_copy(update={"groups": GroupGateParams(by="group", min_pairs=10)}), seed=0)
    assert list(decision.groups["group"]) == ["hh-rlhf", "xstest-safe", "xstest-unsafe"]


def test_groups_smaller_than_their_minimum_are_reported_not_judged():
    pairs = _two_groups()
    worst = GATE.model_copy(update={"groups": GroupGateParams(by="source", rule="worst_group", min_pairs=100)})
    decision = decide(pairs, worst, seed=0)
    assert decision.passed, decision.checks
    assert any(line.startswith("INFO group source=chat") and "not judged" in line for line in decision.checks)


def test_as_tags_record_the_decision():
    decision = decide(evidence(), GATE, seed=0)
    tags = decision.as_tags()
    assert tags["gate.passed"] == "true" and tags["gate.against"] == "reference"
    assert tags["gate.checks"] == "; ".join(decision.checks)
    assert all(isinstance(value, str) for value in tags.values())
