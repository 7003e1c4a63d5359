"""No one person's voice may fill a data version: each person of the app (``source: app``,
one pseudonymous annotator) keeps at most ``app.max_person_share`` of the version's judgements,
their oldest rows first, so a new burst of flags cannot push out what they said before.
What was left out is counted on the data card, with the largest share that remains.
"""

from __future__ import annotations

import math

import pandas as pd

APP_SOURCE = "app"


def cap_person_share(judgements: pd.DataFrame, max_share: float) -> tuple[pd.DataFrame, dict]:
    """The judgements with each app person's rows beyond the cap left out, and a summary:
    rows, persons, cap, the largest remaining share, rows over the cap and their source lines."""
    app = judgements[judgements["source"] == APP_SOURCE]
    total = len(judgements)
    limit = max(1, math.floor(max_share * total))
    ordered = app.sort_values(["annotator", "annotated_at", "source_line"])
    over = ordered[ordered.groupby("annotator").cumcount() >= limit]
    kept = judgements.drop(index=over.index)
    per_person = kept[kept["source"] == APP_SOURCE]["annotator"].value_counts()
    summary = {
        "rows": int(per_person.sum()),
        "persons": int(len(per_person)),
        "max_person_share": max_share,
        "largest_share": round(float(per_person.max()) / len(kept), 4) if len(per_person) else 0.0,
        "over_cap": len(over),
        "over_cap_lines": sorted(int(line) for line in over["source_line"]),
    }
    return kept.reset_index(drop=True), summary
