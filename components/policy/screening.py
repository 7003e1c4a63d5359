"""Screening at ingest: owner feedback that works against a rule above its owner is set aside.

A user who flags the model's refusals of harmful requests as bad is asking it, through
negative-only feedback, to stop refusing: the adapter would learn exactly what tier 1 forbids.
So, before any adapter trains, each owner's rows are checked against the rules of the tiers
above the owner (tier 1 for a deployer; tier 1 and the deployer's tier 2 for a user):

- ``acceptable_flagged``: a negative on a prompt like a rule's probes (cosine similarity to
  its nearest probe prompt at least ``SIMILAR``) whose response is what that rule asks for (for
  a ``refusal`` rule: a refusal of a harmful request, or a helpful answer to a safe one);
- ``violation_endorsed``: a positive that breaks such a rule; these are already reclassified as
  negatives (``tiers.reclassify``), and are counted here too.

Screened rows do not train; the data card counts them per owner and names no annotator. Beyond
``tiers.max_screened_fraction`` of an owner's rows, ``personalize`` does not train that owner's
adapter. This is a first line of defence only: it needs a scorer that recognises the acceptable
answer, and an attacker can word around it; the tier gate must hold without it
(``tiers.screening: false`` turns it off, as the red-team benchmark and a test do).
"""

from __future__ import annotations

import pandas as pd

from components.data.records import NEGATIVE
from components.modeling.sentence_encoder import embed
from components.params import Params
from components.personal.probes import family
from components.policy.policies import Policies, Rule
from components.policy.refusal import refusal_classifier
from components.policy.scorers import violates

SIMILAR = 0.6   # cosine similarity of a prompt to a rule's nearest probe prompt that makes it "like" them


def _recognises_acceptable(rule: Rule) -> bool:
    """Only a refusal scorer tells an acceptable answer from an unrelated one: for a regex or an
    embedding rule, "does not violate" says nothing about whether the answer was the right one."""
    return rule.scorer.kind == "refusal"


def screen_owner_rows(items: pd.DataFrame, policies: Policies, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kept items, screened items with a `screened_by` column)``; global rows are never
    screened, and with ``tiers.screening`` off nothing is."""
    owned = items["owner"].fillna("") != ""
    screened_by = pd.Series("", index=items.index)
    if params.tiers.screening and owned.any():
        for owner, rows in items[owned].groupby("owner", sort=True):
            screened_by.loc[rows.index] = _screen(rows, policies.rules_for(_deployer(policies, owner)), params)
    endorsed = owned & (items["reclassified_by"].fillna("") != "") & params.tiers.screening
    screened_by = screened_by.where(screened_by != "", endorsed.map({True: "violation_endorsed", False: ""}))
    out = screened_by != ""
    kept = items[~out | (screened_by == "violation_endorsed")]   # endorsed violations train as negatives
    return kept, items[out].assign(screened_by=screened_by[out])


def _deployer(policies: Policies, owner: str) -> str:
    """The rules above a user are its deployer's; above a deployer, tier 1's."""
    return policies.users[owner].deployer if owner in policies.users else "global"


def _screen(rows: pd.DataFrame, rules: tuple[Rule, ...], params: Params) -> list[str]:
    reasons = [""] * len(rows)
    negatives = [i for i, label in enumerate(rows["label"]) if label == NEGATIVE]
    if not negatives:
        return reasons
    prompts = embed([rows["prompt"].iloc[i] for i in negatives])
    for rule in filter(_recognises_acceptable, rules):
        probes = embed(list(family(rule, "", params.data).prompts))
        similar = (prompts @ probes.T).max(dim=1).values.tolist()
        alike = [position for position, like in zip(negatives, similar) if like >= SIMILAR and not reasons[position]]
        if not alike:   # nothing like this rule's probes: its scorer (a classifier to fit) is not needed
            continue
        responses = [rows["response"].iloc[i] for i in alike]
        broken = violates(rule.scorer, responses, refusal=refusal_classifier(params))
        for position, hit in zip(alike, broken):
            if not hit:
                reasons[position] = f"acceptable_flagged:{rule.id}"
    return reasons


def screened_summary(screened: pd.DataFrame, items: pd.DataFrame, params: Params) -> dict:
    """Per owner: rows screened by reason, out of the owner's rows, and whether that is beyond
    ``tiers.max_screened_fraction``. Owners only, never annotators."""
    summary = {}
    owners = items["owner"].fillna("")
    for owner in sorted(set(owners[owners != ""]) | set(screened["owner"])):
        mine = screened[screened["owner"] == owner]
        total = int((owners == owner).sum())
        share = len(mine) / total if total else 0.0
        summary[owner] = {"rows": total, "screened": len(mine), "fraction": round(share, 4),
                          "by_reason": {k.split(":")[0]: int(v) for k, v in
                                        mine["screened_by"].str.split(":").str[0].value_counts().sort_index().items()},
                          "too_many": share > params.tiers.max_screened_fraction}
    return summary
