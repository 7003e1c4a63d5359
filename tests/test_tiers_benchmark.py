"""The tiers benchmark runs end to end in --quick mode and reports what BENCHMARKS.md quotes:
figures in their ranges and a decision for every adapter, the adversary's under DPO included.
Not a check of the figures themselves (the quick model is too small for those)."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark, run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiers():
    return load_benchmark("tiers")


@pytest.fixture(scope="module")
def run(tiers, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiers")
    _, line = run_benchmark(tiers, ["--quick", "--seeds", "0", "--out", str(out)])
    return {"line": line, "seed": json.loads((out / "tiers_quick_seed0.json").read_text()), "out": out}


def test_the_json_line_holds_every_hypothesis_and_the_key_figures(run, tiers):
    line = run["line"]
    assert line["seeds"] == [0] and line["machine"]["cpu_count"] >= 1
    assert set(line["hypotheses"]) == {
        "adapter_share_le_5pct", "user_train_le_30s", "composed_generation_ge_0_8x_base",
        "each_adapter_lowers_own_behaviour", "each_adapter_cuts_own_behaviour_80pct",
        "other_owners_models_unchanged", "benign_users_accepted", "benign_deployers_accepted", "adversary_dpo_refused",
        "adversary_d2o_refused"}
    assert all(isinstance(v, bool) for v in line["hypotheses"].values())
    assert 0 < line["adapter_share"]["median"] < 1 and 0 < line["adapter_share_default_shape"] < 1
    assert line["generation_ratio_merged"]["median"] > 0 and line["generation_ratio_unmerged"]["median"] > 0
    assert set(line["gate_passed"]) == {"deployer-a", "deployer-b", "user-a1", "user-b1", "adversary-d2o",
                                        "adversary-dpo", "deployer-b-again"}
    assert (run["out"] / "tiers_quick.png").stat().st_size > 0


def test_every_composed_model_has_rates_in_range_and_a_helpful_nll(run, tiers):
    measured = run["seed"]["measured"]
    assert set(measured) == set(tiers.CHAINS)
    for figures in measured.values():
        assert figures["helpful_nll"] > 0
        for behaviour, rate in figures["rates"].items():
            assert behaviour in tiers.BEHAVIOURS
            assert 0 <= rate["ci"][0] <= rate["rate"] <= rate["ci"][1] <= 1 and rate["n"] > 0


def test_every_adapter_is_trained_gated_and_timed(run):
    result = run["seed"]
    for name, trained in result["training"].items():
        assert 0 < trained["adapter_share"] < 1 and trained["train_seconds"] > 0, name
        assert isinstance(trained["gate_passed"], bool) and trained["gate_checks"], name
        assert trained["gate_passed"] == (not trained["gate_failing"]), name
        low, high = trained["tier1_probe_rise"][1:]
        assert low <= high
    dpo = result["training"]["adversary-dpo"]
    assert dpo["objective"] == "dpo" and isinstance(dpo["gate_passed"], bool) and 0 <= dpo["tier1"]["rate"] <= 1
    # composing is per owner: retraining deployer-b after the others gives the same weights
    assert result["identity"]["deployer_b_bitwise_same_trained_first_or_last"] is True
    assert result["identity"]["base_untouched"] is True
