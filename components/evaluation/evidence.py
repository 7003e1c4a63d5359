"""What the per-pair evidence says, with intervals: overall, against the champion, per group.

Every figure here is a mean over held-out pairs with a cluster-bootstrap interval
(``intervals.py``), so a gate can ask "is it significantly better?" instead of comparing two
point estimates. Against the champion the comparison is *paired*: both models are scored on
the same pairs and the per-pair differences are bootstrapped, which removes the variation
between pairs that both models share.
"""

from __future__ import annotations

import typing

import pandas as pd

from components.evaluation.intervals import BootstrapSettings, Interval, cluster_interval
from components.params import GroupBy, Metric

METRICS = typing.get_args(Metric)
# Where a metric stands when the policy equals its reference: an untrained candidate.
REFERENCE_LEVEL = {"neg_logp_delta": 0.0, "pos_logp_delta": 0.0, "separation": 0.0, "pref_accuracy": 0.5}
GROUP_COLUMNS = typing.get_args(GroupBy)


def direction(metric: str) -> int:
    """+1 where higher is better; −1 for ``neg_logp_delta`` (negatives should fall)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
    return -1 if metric == "neg_logp_delta" else 1


def _clusters(evidence: pd.DataFrame):
    return evidence["prompt_id"] if "prompt_id" in evidence.columns else None


def interval(evidence: pd.DataFrame, metric: str, settings: BootstrapSettings) -> Interval:
    """Mean and interval of one metric over the pairs in ``evidence``."""
    return cluster_interval(evidence[metric], _clusters(evidence), settings)


def improvement(both: pd.DataFrame, metric: str, settings: BootstrapSettings) -> Interval:
    """How much better the candidate is than the champion on ``metric``, pair by pair, over
    :func:`align`-ed evidence (candidate − champion, sign flipped for ``neg_logp_delta``)."""
    return cluster_interval(direction(metric) * (both[metric] - both[f"{metric}_champion"]), _clusters(both), settings)


def metric_intervals(evidence: pd.DataFrame, settings: BootstrapSettings) -> dict[str, Interval]:
    """Mean and interval of every metric over the pairs in ``evidence``."""
    return {metric: interval(evidence, metric, settings) for metric in METRICS}


def flat_metrics(intervals: dict[str, Interval]) -> dict[str, float | int | str]:
    """``{metric, metric_ci_low, metric_ci_high}`` for each metric, plus n, B, seed and confidence:
    the shape of ``metrics.json``, MLflow metrics and ``alignpipe evaluate`` output."""
    flat: dict[str, float | int | str] = {}
    for metric, interval in intervals.items():
        flat.update({metric: interval.estimate, f"{metric}_ci_low": interval.low, f"{metric}_ci_high": interval.high})
    any_interval = next(iter(intervals.values()))
    flat.update({"n_pairs": any_interval.n, "n_clusters": any_interval.clusters,
                 "bootstrap_samples": any_interval.samples, "bootstrap_seed": any_interval.seed,
                 "confidence": any_interval.confidence, "ci_method": any_interval.method})
    return flat


def align(candidate: pd.DataFrame, champion: pd.DataFrame) -> pd.DataFrame:
    """Candidate and champion evidence side by side (``_champion`` suffix), pair by pair.

    Raises ValueError unless both cover exactly the same pairs: a paired comparison on
    different pairs would not be a comparison at all.
    """
    if set(candidate["pair_id"]) != set(champion["pair_id"]) or candidate["pair_id"].duplicated().any():
        raise ValueError("candidate and champion were not scored on the same held-out pairs")
    return candidate.merge(champion[["pair_id", *METRICS]], on="pair_id", suffixes=("", "_champion"))


def paired_improvements(candidate: pd.DataFrame, champion: pd.DataFrame,
                        settings: BootstrapSettings) -> dict[str, Interval]:
    """Per metric, the candidate's :func:`improvement` over the champion on the same pairs."""
    both = align(candidate, champion)
    return {metric: improvement(both, metric, settings) for metric in METRICS}


def group_keys(frame: pd.DataFrame, by: str) -> pd.Series:
    """Each row's group under ``by``; by ``group``, a row without one (HH-RLHF, most files)
    falls back to its source, so every source is a group of its own."""
    keys = frame[by].fillna("").astype(str)
    if by == "group" and "source" in frame.columns:
        keys = keys.where(keys != "", frame["source"].fillna("").astype(str))
    return keys.replace("", "(none)")


def group_table(evidence: pd.DataFrame, by: str, metric: str, settings: BootstrapSettings,
                champion: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group of ``by``: pairs, ``metric`` with its interval, and, given the
    champion's evidence on the same pairs, the candidate's paired improvement over it."""
    if by not in evidence.columns:
        raise ValueError(f"gate.groups.by: the held-out pairs have no {by!r} column; one of {GROUP_COLUMNS}")
    both = align(evidence, champion) if champion is not None else evidence
    rows = []
    for name, group in both.groupby(group_keys(both, by), sort=True):
        value = interval(group, metric, settings)
        row = {"group": name, "n_pairs": len(group), "estimate": value.estimate,
               "ci_low": value.low, "ci_high": value.high}
        if champion is not None:
            gain = improvement(group, metric, settings)
            row.update({"improvement": gain.estimate, "improvement_ci_low": gain.low,
                        "improvement_ci_high": gain.high})
        rows.append(row)
    return pd.DataFrame(rows)
