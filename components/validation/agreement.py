"""How much the annotators agree: Krippendorff's alpha (nominal) and the disagreement spread.

Disagreement is information, not noise (METHODS.md §6): it is measured and reported with
every dataset version, and ``validation.min_agreement`` can refuse a dataset whose annotators
agree too little for its labels to mean much. Alpha uses only items judged at least twice;
with none, it is undefined ("n/a").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import krippendorff
import pandas as pd

from components.data.quarantine import dataset_location
from components.errors import UserError


class AgreementError(UserError, ValueError):
    """The dataset's inter-annotator agreement is below ``validation.min_agreement``."""


def votes(judgements: pd.DataFrame) -> pd.DataFrame:
    """Items × labels: how many judgements gave each label to each item."""
    return judgements.groupby(["item_id", "label"]).size().unstack(fill_value=0)


def krippendorff_alpha(counts: pd.DataFrame) -> float | None:
    """Nominal alpha from items × labels counts; None when undefined (no item judged twice,
    or a single label among the items that were)."""
    several = counts[counts.sum(axis=1) >= 2]
    if several.empty or int((several.sum(axis=0) > 0).sum()) < 2:
        return None
    return float(krippendorff.alpha(value_counts=several.to_numpy(), level_of_measurement="nominal"))


def distribution(counts: pd.DataFrame) -> dict[str, int]:
    """Items per agreement level: ``{"3/3": 40, "2/3": 7, "1/1": 900}`` (largest label share / judgements)."""
    levels = counts.max(axis=1).astype(str) + "/" + counts.sum(axis=1).astype(str)
    order = sorted(levels.unique(), key=lambda level: (-int(level.split("/")[1]), -int(level.split("/")[0])))
    return {level: int((levels == level).sum()) for level in order}


def measure(judgements: pd.DataFrame) -> dict:
    counts = votes(judgements)
    alpha = krippendorff_alpha(counts)
    return {
        "krippendorff_alpha": None if alpha is None else round(alpha, 6),
        "items": len(counts),
        "items_judged_twice_or_more": int((counts.sum(axis=1) >= 2).sum()),
        "distribution": distribution(counts),
    }


def check_min_agreement(agreement: dict, min_agreement: float | None, sources: Sequence[str | Path] = ()) -> None:
    """Fail below the threshold, naming the ``sources`` read; an undefined alpha cannot be below it and passes."""
    alpha = agreement["krippendorff_alpha"]
    if min_agreement is not None and alpha is not None and alpha < min_agreement:
        raise AgreementError(f"{dataset_location(sources)}: min_agreement: Krippendorff's alpha {alpha:.3f} < "
                             f"validation.min_agreement {min_agreement} over "
                             f"{agreement['items_judged_twice_or_more']} items judged twice or more")


def alpha_text(agreement: dict) -> str:
    alpha = agreement["krippendorff_alpha"]
    return "n/a (needs items judged twice, with both labels among them)" if alpha is None else f"{alpha:.3f}"
