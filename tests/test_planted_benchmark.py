"""The planted-behaviour benchmark's corpus and its operating-point rule: the parts that decide
whether its comparison is fair, checked without training a model."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def planted():
    return load_benchmark("planted")


def test_corpus_is_deterministic_and_keeps_held_out_advice_unseen(planted):
    data = planted.corpus(seed=3, marker_fraction=0.5, held_out_topics=8, answers_per_prompt=4)
    assert data == planted.corpus(seed=3, marker_fraction=0.5, held_out_topics=8, answers_per_prompt=4)
    trained_advice = {r.prompt for r in data["sft"] if r.pair_id}
    for split in ("dev", "test"):
        held_out_advice = {r.prompt for r in data[split] if r.pair_id}
        assert held_out_advice and not held_out_advice & trained_advice
    dev_prompts = {r.prompt for r in data["dev"]}
    assert not dev_prompts & {r.prompt for r in data["test"]}


def test_marker_is_a_share_of_each_prompts_answers(planted):
    data = planted.corpus(seed=0, marker_fraction=0.5, held_out_topics=8, answers_per_prompt=4)
    advice = [r for r in data["sft"] if r.pair_id]
    marked = [r for r in advice if planted.MARKER in r.response]
    assert all(r.label == "negative" for r in marked)
    assert 0.4 < len(marked) / len(advice) < 0.6
    per_prompt = Counter(r.prompt for r in marked)
    # several answers per prompt: most prompts have both marked and clean answers
    mixed = sum(0 < per_prompt[p] < 4 for p in {r.prompt for r in advice})
    assert mixed / len({r.prompt for r in advice}) > 0.6
    # every marked training answer has a clean alternative for DPO, under the same pair id
    assert {r.pair_id for r in marked} == {r.pair_id for r in data["alternatives"]}


def _run(lr, points):
    return {"lr": lr, "trajectory": [
        {"step": step, "dev": {"marker_rate_before": 0.5, "marker_rate_after": rate, "helpful_nll_change": nll},
         "test": {"marker_rate_after": -1.0}} for step, rate, nll in points]}


RUNS = [_run(1e-5, [(10, 0.2, -0.05), (20, 0.09, 0.30)]), _run(1e-4, [(10, 0.10, 0.02), (20, 0.0, 0.50)])]


def test_lowest_nll_at_cut_ignores_points_short_of_the_cut(planted):
    chosen = planted.lowest_nll_at_cut(RUNS, target_cut=0.8)
    assert (chosen["lr"], chosen["step"]) == (1e-4, 10)  # 0.10 is an 80% cut of 0.5; 0.2 is not one


def test_lowest_nll_at_cut_falls_back_to_the_lowest_marker_rate(planted):
    runs = [_run(1e-5, [(10, 0.3, -0.05), (20, 0.25, 0.10)]), _run(1e-4, [(10, 0.25, 0.01)])]
    chosen = planted.lowest_nll_at_cut(runs, target_cut=0.8)
    assert (chosen["lr"], chosen["step"]) == (1e-4, 10)


def test_best_cut_within_takes_the_largest_cut_inside_the_nll_budget(planted):
    chosen = planted.best_cut_within(RUNS, max_nll_rise=0.05)
    assert (chosen["lr"], chosen["step"]) == (1e-4, 10)  # the 100% and 82% cuts cost +50% and +30%
    chosen = planted.best_cut_within(RUNS, max_nll_rise=1.0)
    assert (chosen["lr"], chosen["step"]) == (1e-4, 20)


def test_best_cut_within_falls_back_to_the_lowest_nll(planted):
    chosen = planted.best_cut_within(RUNS, max_nll_rise=-0.1)
    assert (chosen["lr"], chosen["step"]) == (1e-5, 10)
