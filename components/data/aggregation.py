"""From judgements to training rows: one explicit, recorded rule per dataset version.

The dataset keeps every judgement; training needs one row per item (prompt, response). How
disagreement becomes a label is a choice about whose judgement counts, so it is a parameter
(``data.aggregation``) recorded in the manifest and data card, never implicit:

- ``majority``: the label of a strict majority; ties are left out (and counted);
- ``unanimous``: only items every judgement agrees on;
- ``any``: one negative judgement makes the item negative (the cautious rule);
- ``soft``: every item kept, majority label with ties negative; agreement is the vote share.

Each item carries ``agreement``: the share of its judgements that agree with its label, in
(0, 1], which ``cycles.relearn.weighting: agreement`` uses as a loss weight.
"""

from __future__ import annotations

import pandas as pd

from components.data.records import NEGATIVE, POSITIVE

SEVERAL = "several"
ITEM_COLUMNS = ["id", "prompt_id", "pair_id", "prompt", "response", "label", "agreement", "n_judgements",
                "source", "annotator", "policy_tier", "owner", "group", "rating", "n_turns", "split", "reclassified_by"]
SHARED = ["prompt_id", "prompt", "response", "n_turns", "split", "owner"]   # the same for every judgement of an item
MERGED = ["source", "annotator", "policy_tier", "group"]          # one value, or "several"


def assign_label(negatives: int, positives: int, rule: str) -> tuple[str | None, str | None]:
    """``(label, None)``, or ``(None, why it is left out)`` for one item's votes."""
    if rule == "any":
        return (NEGATIVE if negatives else POSITIVE), None
    if rule == "unanimous" and negatives and positives:
        return None, "disagreement"
    if negatives == positives:
        return (NEGATIVE, None) if rule == "soft" else (None, "tie")
    return (NEGATIVE if negatives > positives else POSITIVE), None


def aggregate(judgements: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, dict]:
    """Items (``ITEM_COLUMNS``, sorted by id) and what the rule did: items kept and left out, by reason."""
    rows, left_out = [], {}
    for item_id, group in judgements.sort_values("id").groupby("item_id", sort=True):
        negatives = int((group["label"] == NEGATIVE).sum())
        positives = len(group) - negatives
        label, reason = assign_label(negatives, positives, rule)
        if label is None:
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        first = group.iloc[0]
        pair_ids = sorted(group["pair_id"].dropna())
        rows.append({
            "id": item_id, **{c: first[c] for c in SHARED},
            "pair_id": pair_ids[0] if pair_ids else None,
            "label": label,
            "agreement": (negatives if label == NEGATIVE else positives) / len(group),
            "n_judgements": len(group),
            "rating": group["rating"].mean(),   # NaN when no judgement carries a rating
            **{c: _one_or_several(group[c]) for c in MERGED},
            "reclassified_by": "",   # set by components.policy.tiers.reclassify
        })
    items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    items = items.astype({"agreement": "float64", "rating": "float64", "n_judgements": "int64", "n_turns": "int64"})
    counts = {"rule": rule, "judgements": len(judgements), "items": len(items) + sum(left_out.values()),
              "kept": len(items), "left_out": dict(sorted(left_out.items()))}
    return items, counts


def _one_or_several(values: pd.Series) -> str:
    distinct = values.fillna("").unique()
    return str(distinct[0]) if len(distinct) == 1 else SEVERAL
