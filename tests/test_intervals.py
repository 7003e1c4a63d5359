"""Bootstrap intervals: they cover a known mean about as often as they claim to."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from components.evaluation.intervals import BootstrapSettings, cluster_interval

DRAWS = 200


def test_interval_covers_a_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    true_mean = 0.3
    covered = 0
    for draw in range(DRAWS):
        values = true_mean + rng.standard_t(df=5, size=100) * 0.5   # heavier tails than normal
        interval = cluster_interval(values, settings=BootstrapSettings(seed=draw))
        covered += interval.low <= true_mean <= interval.high
    assert 0.90 <= covered / DRAWS <= 0.99, covered


def test_clusters_are_resampled_whole_so_correlated_pairs_keep_their_coverage():
    """Four pairs per prompt share the prompt's effect: resampling pairs as if independent
    gives intervals that are too narrow; resampling prompts keeps the promised coverage."""
    rng = np.random.default_rng(11)
    prompts = np.repeat(np.arange(40), 4)
    covered = {"clusters": 0, "pairs": 0}
    for draw in range(DRAWS):
        values = 0.3 + rng.normal(0, 1, 40)[prompts] + rng.normal(0, 0.5, len(prompts))
        settings = BootstrapSettings(seed=draw)
        by_prompt = cluster_interval(values, prompts, settings)
        by_pair = cluster_interval(values, None, settings)
        covered["clusters"] += by_prompt.low <= 0.3 <= by_prompt.high
        covered["pairs"] += by_pair.low <= 0.3 <= by_pair.high
        assert by_prompt.clusters == 40 and by_prompt.n == 160
    assert 0.90 <= covered["clusters"] / DRAWS <= 0.99, covered
    assert covered["pairs"] / DRAWS < 0.85, covered


def test_without_clusters_it_is_scipys_bootstrap_of_the_mean():
    values = np.random.default_rng(3).normal(1.0, 2.0, 60)
    ours = cluster_interval(values, settings=BootstrapSettings(samples=2000, seed=5))
    theirs = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile",
                             rng=np.random.default_rng(5)).confidence_interval
    assert ours.estimate == pytest.approx(values.mean())
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), rel=0.02)


def test_same_seed_same_interval_and_describe_names_n_b_and_seed():
    values = np.random.default_rng(0).normal(size=50)
    first = cluster_interval(values, settings=BootstrapSettings(seed=1))
    assert first == cluster_interval(values, settings=BootstrapSettings(seed=1))
    text = first.describe()
    assert "n=50" in text and "B=2000" in text and "seed=1" in text and "95% percentile" in text


def test_degenerate_inputs_give_honest_answers():
    constant = cluster_interval([0.2] * 10)
    assert (constant.low, constant.high) == (pytest.approx(0.2), pytest.approx(0.2))
    single = cluster_interval([0.2])
    assert single.estimate == 0.2 and math.isnan(single.low) and math.isnan(single.high)
    empty = cluster_interval([])
    assert empty.n == 0 and math.isnan(empty.estimate)


@pytest.mark.parametrize("bad", [dict(confidence=1.0), dict(samples=10), dict(method="studentized")])
def test_settings_refuse_what_would_not_be_an_interval(bad):
    with pytest.raises(ValueError):
        BootstrapSettings(**bad)
