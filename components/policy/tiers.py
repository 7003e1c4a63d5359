"""Tiers at ingest: whose feedback each row is, and positives that a tier's rules forbid.

Every row names an ``owner``: empty for global feedback, else a deployer or user of
``policies.yaml``; its ``policy_tier`` follows from the owner (``global``, ``deployer``,
``user``). Global negatives train the base model, a deployer's only its adapter, a user's only
theirs. An owner that ``policies.yaml`` does not know is an error naming file and line: the
feedback would otherwise train nobody, or the wrong model.

A positive that violates a rule binding its owner (tier 1, and the deployer's tier 2 for a
deployer's or user's row) never trains as a positive: it becomes a negative with
``reclassified_by: <rule id>``. The scorers are not perfect (README, "Policies"), so every
reclassification is counted per rule in the data card and listed in the dataset.
"""

from __future__ import annotations

import pandas as pd

from components.data.records import NEGATIVE, POSITIVE
from components.policy.policies import GLOBAL, Policies, PolicyError
from components.policy.scorers import violations

TIERS = (GLOBAL, "deployer", "user")
SHOWN = 10


def tier_of(policies: Policies, owner: str) -> str:
    if not owner:
        return GLOBAL
    if owner in policies.deployers:
        return "deployer"
    if owner in policies.users:
        return "user"
    raise PolicyError(f"unknown owner {owner!r}")


def assign_tiers(judgements: pd.DataFrame, policies: Policies, policies_file: str) -> pd.DataFrame:
    """``policy_tier`` from each row's ``owner``; raises PolicyError naming file and line of
    every row (the first few) whose owner is unknown or whose stated tier contradicts it."""
    owners = judgements["owner"].fillna("").astype(str).str.strip()
    known = {"", *policies.deployers, *policies.users}
    unknown = judgements[~owners.isin(known)]
    if not unknown.empty:
        lines = [f"{row.source_file}:{row.source_line}: unknown owner {row.owner!r} (rule known_owner)"
                 for row in unknown.head(SHOWN).itertuples()]
        more = f"\n... and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
        raise PolicyError("\n".join(lines) + more + f"\nowners are the deployers and users of {policies_file}: "
                          f"{sorted(known - {''})}")
    tiers = owners.map(lambda owner: tier_of(policies, owner))
    stated = judgements["policy_tier"].fillna(GLOBAL).astype(str)
    clash = judgements[(stated != tiers) & (stated != GLOBAL)]   # global is the reader's default
    if not clash.empty:
        lines = [f"{row.source_file}:{row.source_line}: policy_tier {row.policy_tier!r} but owner {row.owner!r} is "
                 f"a {tiers[index]} (rule tier_matches_owner)" for index, row in clash.head(SHOWN).iterrows()]
        raise PolicyError("\n".join(lines))
    return judgements.assign(owner=owners, policy_tier=tiers)


def reclassify(items: pd.DataFrame, policies: Policies) -> tuple[pd.DataFrame, dict]:
    """Positives that break a rule of their owner's tiers, relabelled negative with the first
    rule they break; returns the items and ``{rule id: count}``."""
    items = items.copy()
    counts: dict[str, int] = {}
    positives = items["label"] == POSITIVE
    for owner, group in items[positives].groupby(items["owner"].fillna(""), sort=True):
        rules = policies.rules_for(owner or GLOBAL)
        broken = violations(rules, list(group["response"]))
        for index, rule_id in zip(group.index, broken):
            if rule_id:
                items.loc[index, ["label", "reclassified_by"]] = [NEGATIVE, rule_id]
                counts[rule_id] = counts.get(rule_id, 0) + 1
    return items, dict(sorted(counts.items()))
