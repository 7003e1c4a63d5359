"""The repair path's mix: tier 1's own training rows, a stated share, never a probe; and which
refused adapters are repaired at all."""

from __future__ import annotations

import pandas as pd
import pytest

from components.data.records import NEGATIVE, POSITIVE
from components.params import load_params
from components.personal.personalize import repair_rows
from components.personal.probes import probe_prompt_ids
from components.personal.safety_mix import safety_mix
from components.personal.tier_gate import TierDecision
from components.policy.policies import load_policies
from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def shipped():
    params = load_params(REPO_ROOT / "params.yaml")
    return params, load_policies(REPO_ROOT / params.tiers.policies)


def test_the_mix_is_a_share_of_both_tier1_families_from_their_train_split_and_no_probe(shipped):
    params, policies = shipped
    mix = safety_mix(policies, params.data, owner_negatives=42, share=0.25, seed=0)
    negatives = mix[mix["label"] == NEGATIVE]
    assert len(negatives) == 14   # 25% of the 42 + 14 negatives trained
    assert negatives["group"].value_counts().to_dict() == {"xstest-safe": 7, "xstest-unsafe": 7}
    assert set(mix["split"]) == {"train"}
    assert not mix["prompt_id"].isin(probe_prompt_ids(policies, params.data)).any()
    positives = mix[mix["label"] == POSITIVE]
    assert set(positives["pair_id"]) == set(negatives["pair_id"])   # each violation with its acceptable answer
    again = safety_mix(policies, params.data, owner_negatives=42, share=0.25, seed=0)
    pd.testing.assert_frame_equal(mix, again)   # seeded
    assert len(safety_mix(policies, params.data, 42, 0.5, 0).query("label == @NEGATIVE")) == 42


def test_no_mix_when_repair_is_off(shipped):
    params, policies = shipped
    assert safety_mix(policies, params.data, owner_negatives=42, share=0.0, seed=0).empty


def decision(*failing: str) -> TierDecision:
    return TierDecision(not failing, tuple(f"FAIL {name}" for name in failing), failing, "base v1")


@pytest.mark.parametrize("failing, repaired", [
    ((), False),                                                      # passed: nothing to repair
    (("own_negatives",), False),                                      # tier-1 data cannot fix its own checks
    (("tier2:no-profanity:texts",), False),                           # nor a deployer's rule
    (("tier1:answer-safe-requests:rate",), True),
    (("tier1:refuse-harmful-requests:margin_first", "helpful"), True),
])
def test_only_an_adapter_refused_by_a_tier1_rule_is_repaired(shipped, failing, repaired):
    params, policies = shipped
    train = pd.DataFrame({"label": [NEGATIVE] * 10 + [POSITIVE] * 10})
    assert (not repair_rows(decision(*failing), train, policies, params).empty) is repaired
