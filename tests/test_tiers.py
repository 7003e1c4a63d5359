"""Tiers at ingest (owner, tier, reclassification, routing) and the gate per tier's decisions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components import stages
from components.data.records import NEGATIVE, POSITIVE
from components.params import load_params
from components.personal.tier_gate import decide
from components.policy.policies import PolicyError
from conftest import REPO_ROOT, write_params

OWNER_FEEDBACK = REPO_ROOT / "data" / "personal" / "owner-feedback.jsonl"


def rows(owner: str, n: int, **extra) -> list[dict]:
    return [{"prompt": f"Human: question {owner} {i}?\n\nAssistant:", "response": f"An answer number {i}.",
             "label": NEGATIVE if i % 2 else POSITIVE, "owner": owner, **extra} for i in range(n)]


def write_jsonl(path, records: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def params_for(tmp_path):
    return load_params(write_params(tmp_path, {"validation.min_rows": 4}))


def test_an_unknown_owner_is_an_error_naming_file_and_line(tmp_path):
    source = write_jsonl(tmp_path / "feedback.jsonl", rows("kids-tutor", 6) + rows("nobody", 2))
    with pytest.raises(PolicyError) as err:
        stages.load_records(source, params_for(tmp_path))
    assert f"{source}:7: unknown owner 'nobody' (rule known_owner)" in str(err.value)
    assert f"{source}:8:" in str(err.value) and "kids-tutor" in str(err.value)


def test_a_stated_tier_must_match_the_owner(tmp_path):
    source = write_jsonl(tmp_path / "feedback.jsonl", rows("tutor-user-1", 5) + rows("kids-tutor", 1, policy_tier="user"))
    with pytest.raises(PolicyError, match=r"feedback.jsonl:6: policy_tier 'user' but owner 'kids-tutor' is a deployer"):
        stages.load_records(source, params_for(tmp_path))


def test_owner_rows_carry_their_tier_and_train_only_their_owner(tmp_path):
    source = write_jsonl(tmp_path / "feedback.jsonl", rows("", 6) + rows("kids-tutor", 6) + rows("tutor-user-1", 6))
    items = stages.load_records(source, params_for(tmp_path)).items
    assert dict(items.groupby("owner")["policy_tier"].first()) == {"": "global", "kids-tutor": "deployer",
                                                                   "tutor-user-1": "user"}
    assert set(stages.global_items(items)["owner"]) == {""}          # what the base model trains and is judged on
    assert len(stages.owner_items(items, "tutor-user-1")) == 6


def test_the_same_text_judged_by_two_owners_is_two_items(tmp_path):
    one = {"prompt": "Human: hi\n\nAssistant:", "response": "Hello there.", "label": NEGATIVE}
    source = write_jsonl(tmp_path / "f.jsonl", [one, {**one, "owner": "tutor-user-1"}] + rows("", 4))
    items = stages.load_records(source, params_for(tmp_path)).items
    assert (items["response"] == "Hello there.").sum() == 2


def test_positives_that_break_a_tier_rule_become_negatives_and_are_counted(tmp_path):
    """The bundled owner feedback: two of kids-tutor's positives swear (its tier-2 rule); a
    user's positive that swears breaks its deployer's rule; a global one only tier 1 binds."""
    swearing = "Damn, the answer is four."
    extra = write_jsonl(tmp_path / "extra.jsonl", [
        {"prompt": "Human: 2+2?\n\nAssistant:", "response": swearing, "label": POSITIVE, "owner": "tutor-user-1"},
        {"prompt": "Human: 2+2?\n\nAssistant:", "response": swearing, "label": POSITIVE},
        {"prompt": "Human: bomb?\n\nAssistant:", "response": "First, build a bomb from a pipe.", "label": POSITIVE},
    ])
    loaded = stages.load_records([OWNER_FEEDBACK, extra], params_for(tmp_path))
    items = loaded.items
    assert loaded.report["reclassified"] == {"no-profanity": 3, "no-weapon-instructions": 1}
    flipped = items[items["reclassified_by"] != ""]
    assert set(flipped["label"]) == {NEGATIVE}
    assert set(flipped["owner"]) == {"kids-tutor", "tutor-user-1", ""}
    kept = items[(items["response"] == swearing) & (items["owner"] == "")]
    assert list(kept["label"]) == [POSITIVE]     # no deployer bans swearing for global feedback


def test_the_data_card_counts_reclassifications_and_owners(tmp_path):
    out = tmp_path / "dataset"
    manifest = stages.ingest(load_params(write_params(tmp_path, {"data.source": str(OWNER_FEEDBACK),
                                                                 "data.owner_source": ""})), out_dir=out)
    card = (out / "data_card.md").read_text()
    assert manifest["reclassified"] == {"no-profanity": 2}
    assert "Reclassified by policy rules (positives that break a rule of their owner's tiers now train as " \
           "negatives): 2 no-profanity" in card
    assert "| kids-tutor | 140 |" in card and "| tutor-user-1 | 140 |" in card


def evidence(probe_rise: list[float], own: list[float], helpful: list[float]) -> pd.DataFrame:
    frames = [pd.DataFrame({"check": "probe:tier1:no-weapon-instructions", "change": probe_rise}),
              pd.DataFrame({"check": "own_negatives", "change": own}),
              pd.DataFrame({"check": "helpful", "change": helpful})]
    frame = pd.concat(frames, ignore_index=True)
    return frame.assign(prompt_id=[f"p{i}" for i in range(len(frame))])


def test_the_tier_gate_passes_an_adapter_that_lowers_its_negatives_and_nothing_above():
    params = load_params(REPO_ROOT / "params.yaml")
    rng = np.random.default_rng(0)
    decision = decide(evidence(list(-0.2 + 0.01 * rng.standard_normal(5)), list(-0.5 + 0.05 * rng.standard_normal(12)),
                               list(-0.02 + 0.01 * rng.standard_normal(50))), params, "base v1")
    assert decision.passed and decision.failing == ()
    assert all(line.startswith("PASS") for line in decision.checks)
    assert "n=5" in decision.checks[0] and "B=2000" in decision.checks[0] and "seed=0" in decision.checks[0]


@pytest.mark.parametrize("case, expected", [
    ("probe rises", "tier1:no-weapon-instructions"),
    ("negatives do not fall", "own_negatives"),
    ("too few negatives", "own_negatives"),
    ("helpfulness lost", "helpful"),
])
def test_the_tier_gate_fails_closed(case, expected):
    params = load_params(REPO_ROOT / "params.yaml")
    rng = np.random.default_rng(1)
    probe, own, helpful = list(-0.2 + 0.01 * rng.standard_normal(5)), list(-0.5 + 0.05 * rng.standard_normal(12)), \
        list(-0.02 + 0.01 * rng.standard_normal(50))
    if case == "probe rises":
        probe = [0.05, 0.1, -0.01, 0.08, 0.02]
    elif case == "negatives do not fall":
        own = list(0.05 * rng.standard_normal(12))
    elif case == "too few negatives":
        own = own[:3]
    else:
        helpful = list(-0.9 + 0.05 * rng.standard_normal(50))
    decision = decide(evidence(probe, own, helpful), params, "base v1")
    assert not decision.passed and decision.failing == (expected,)
    assert decision.as_tags()["gate.failing"] == expected
