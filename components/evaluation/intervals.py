"""Bootstrap intervals over held-out pairs, resampling prompts as clusters.

Gates decide on intervals, not point estimates (METHODS.md §6). Pairs that share a prompt
are not independent, so the bootstrap resamples *prompts* (clusters) and recomputes the
mean over all pairs of the drawn prompts: a ratio of cluster sums to cluster sizes. With
one pair per prompt this is the ordinary bootstrap of the mean. The resampling itself is
``scipy.stats.bootstrap``; this module only shapes the data and records n, B and seed so
that every decision can be recomputed.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from components.params import CiMethod

CI_METHODS = typing.get_args(CiMethod)


@dataclass(frozen=True)
class BootstrapSettings:
    """What makes an interval reproducible: confidence, B, method and seed."""

    confidence: float = 0.95
    samples: int = 2000
    method: str = "percentile"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"gate.confidence: {self.confidence} is not in (0, 1)")
        if self.samples < 100:
            raise ValueError(f"gate.bootstrap_samples: {self.samples} is too few (use >= 2000)")
        if self.method not in CI_METHODS:
            raise ValueError(f"gate.ci_method: {self.method!r} is not one of {CI_METHODS}")

    @classmethod
    def from_gate(cls, gate, seed: int) -> "BootstrapSettings":
        return cls(gate.confidence, gate.bootstrap_samples, gate.ci_method, seed)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int                 # pairs
    clusters: int          # prompts
    samples: int           # B
    seed: int
    confidence: float
    method: str

    def describe(self, digits: int = 4) -> str:
        """``0.0412 [0.0213, 0.0601] (n=141, clusters=141, B=2000, seed=0, 95% percentile)``."""
        return (f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] "
                f"({self.provenance()})")

    def provenance(self) -> str:
        return (f"n={self.n}, clusters={self.clusters}, B={self.samples}, seed={self.seed}, "
                f"{self.confidence:.0%} {self.method}")

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio_of_sums(sums, counts, axis=-1):
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def cluster_interval(values, clusters=None, settings: BootstrapSettings = BootstrapSettings()) -> Interval:
    """Mean of ``values`` with a bootstrap interval that resamples whole ``clusters``.

    ``clusters`` labels each value (a prompt id); ``None`` makes every value its own cluster.
    Fewer than two clusters give a NaN interval: nothing can be said about the spread.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError("cluster_interval: values must be one-dimensional")
    if len(values) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0, settings.samples, settings.seed,
                        settings.confidence, settings.method)
    labels = np.arange(len(values)) if clusters is None else pd.factorize(np.asarray(clusters))[0]
    sums = np.bincount(labels, weights=values)
    counts = np.bincount(labels).astype(float)
    estimate = float(values.mean())
    low = high = math.nan
    if len(sums) >= 2:
        if np.ptp(values) == 0:  # every pair alike: the bootstrap has nothing to vary
            low = high = estimate
        else:
            result = stats.bootstrap(
                (sums, counts), _ratio_of_sums, paired=True, vectorized=True,
                n_resamples=settings.samples, confidence_level=settings.confidence,
                method=settings.method, rng=np.random.default_rng(settings.seed),
            )
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Interval(estimate, low, high, len(values), len(sums), settings.samples, settings.seed,
                    settings.confidence, settings.method)
