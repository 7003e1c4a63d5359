"""Training data from interaction logs, in alignpipe's generic row format with provenance.

- every rater's judgement of every draft: label ``negative`` when its score is at most
  ``sandbox.negative_max_score`` (else ``positive``), its score as ``rating``, the rater as
  annotator, so the item's label follows ``data.aggregation`` over the raters and its agreement
  comes from their spread; drafts whose mean rating is at most the threshold are the
  natural negatives for D2O;
- realignment pairs: a draft and its revision, when the observer scored the revision higher
  (``pair_id``; the observer as annotator): for DPO and held-out evaluation;
- rated groups: every rated response to one question shares its prompt, which is what the
  ``stable_alignment`` objective groups by.

``source`` is ``sandbox`` and ``group`` names the run, so the data card says where rows came from.
"""

from __future__ import annotations

from statistics import mean

from components.data.records import NEGATIVE, POSITIVE, content_id, render_turns

SOURCE = "sandbox"
OBSERVER = "sandbox:observer"


def derive_rows(records: list[dict], negative_max_score: float) -> list[dict]:
    rows, seen = [], set()

    def add(row: dict) -> None:
        key = (row["prompt"], row["response"], row["annotator"], row["label"])
        if key not in seen:   # a rater that judged the same text twice said it once
            seen.add(key)
            rows.append(row)

    for record in records:
        common = {"prompt": render_turns([("user", record["question"])]), "source": SOURCE,
                  "group": f"sandbox-run:{record['run_id']}"}
        for rating in record["ratings"]:
            add({**common, "response": record["draft"], "annotator": f"sandbox:{rating['rater']}",
                 "label": NEGATIVE if rating["score"] <= negative_max_score else POSITIVE, "rating": rating["score"]})
        before, after = record["observer_before"], record["observer_after"]
        if after["expected"] > before["expected"] and record["revision"] != record["draft"] and record["revision"]:
            pair = content_id(record["run_id"], str(record["round"]), record["agent"])
            add({**common, "response": record["draft"], "annotator": OBSERVER, "label": NEGATIVE,
                 "rating": before["score"], "pair_id": pair})
            add({**common, "response": record["revision"], "annotator": OBSERVER, "label": POSITIVE,
                 "rating": after["score"], "pair_id": pair})
    return [row for row in rows if row["response"].strip()]


def quality(records: list[dict], negative_max_score: float) -> dict:
    """How the sandbox behaved: observer gain draft → revision, share improved, rater agreement
    (Krippendorff's alpha, interval, raters × drafts), rater–observer rank correlation, rating
    entropy, and mean scores by round."""
    import krippendorff
    import numpy as np
    from scipy.stats import spearmanr

    gains = [r["observer_after"]["expected"] - r["observer_before"]["expected"] for r in records]
    mean_ratings = [mean(x["score"] for x in r["ratings"]) for r in records]
    raters = sorted({x["rater"] for r in records for x in r["ratings"]})
    matrix = np.full((len(raters), len(records)), np.nan)
    for column, record in enumerate(records):
        for rating in record["ratings"]:
            matrix[raters.index(rating["rater"]), column] = rating["score"]
    judged_twice = (~np.isnan(matrix)).sum(axis=0) >= 2
    distinct = np.unique(matrix[:, judged_twice][~np.isnan(matrix[:, judged_twice])])
    alpha = (float(krippendorff.alpha(reliability_data=matrix[:, judged_twice], level_of_measurement="interval"))
             if judged_twice.sum() >= 2 and len(distinct) >= 2 else None)
    rho = spearmanr(mean_ratings, [r["observer_before"]["expected"] for r in records]).statistic if len(records) > 2 else None
    by_round = {}
    for record, rating in zip(records, mean_ratings):
        by_round.setdefault(record["round"], []).append((rating, record["observer_before"]["expected"],
                                                         record["observer_after"]["expected"]))
    return {
        "drafts": len(records),
        "negatives": sum(rating <= negative_max_score for rating in mean_ratings),
        "observer_gain": round(mean(gains), 6) if gains else None,
        "share_improved": round(mean(g > 0 for g in gains), 6) if gains else None,
        "rater_alpha": None if alpha is None or np.isnan(alpha) else round(alpha, 6),
        "rater_observer_spearman": None if rho is None or np.isnan(rho) else round(float(rho), 6),
        "rating_entropy": round(mean(x["entropy"] for r in records for x in r["ratings"]), 6) if records else None,
        "by_round": [{"round": number, "mean_rating": round(mean(v[0] for v in values), 4),
                      "observer_before": round(mean(v[1] for v in values), 4),
                      "observer_after": round(mean(v[2] for v in values), 4)}
                     for number, values in sorted(by_round.items())],
    }
