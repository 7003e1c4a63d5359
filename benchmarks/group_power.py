"""How likely is a group with no true change to pass the registry gate's non-inferiority line?

``gate.groups.rule: worst_group`` passes a group when the worst end of its interval is within
``gate.groups.max_regression`` of the reference. A group the candidate did not change at all
still has per-pair noise, so it passes only with some probability, which grows with its
held-out pairs. This script measures that probability from a run's per-pair evidence
(``artifacts/evidence.parquet``), per group, two ways:

- **simulated**: the group's per-pair separations, centred on 0 (no true change, the same
  spread), resampled to ``n`` pairs ``--draws`` times; each draw gets the gate's own interval
  (``cluster_interval``: percentile bootstrap, B and confidence from params.yaml) and passes or
  not. The share that passes, with its Wilson interval;
- **normal**: ``P(Z >= z - margin / (sd / sqrt(n)))``, the textbook approximation.

``--pairs N [N ...]`` also asks what a split with N held-out pairs would give. It prints a
table and one JSON line::

    .venv/bin/python benchmarks/group_power.py [--evidence artifacts/evidence.parquet] [--pairs 200 300]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import components  # noqa: E402,F401  (quiet/offline defaults)
from components.evaluation.evidence import group_keys  # noqa: E402
from components.evaluation.intervals import BootstrapSettings, cluster_interval  # noqa: E402
from components.params import load_params  # noqa: E402


def pass_rate(values: np.ndarray, n: int, margin: float, settings: BootstrapSettings, draws: int, seed: int) -> float:
    """Share of ``draws`` simulated held-out sets of ``n`` pairs (centred ``values``) whose
    interval's lower end is at least ``-margin``."""
    rng = np.random.default_rng(seed)
    centred = values - values.mean()
    passed = 0
    for draw in range(draws):
        sample = rng.choice(centred, size=n, replace=True)
        drawn = BootstrapSettings(settings.confidence, settings.samples, settings.method, seed + draw)
        passed += cluster_interval(sample, None, drawn).low >= -margin
    return passed / draws


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence", default="artifacts/evidence.parquet")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pairs", type=int, nargs="*", default=[], help="also simulate held-out sets of these sizes")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params(args.params)
    gate = params.gate
    settings = BootstrapSettings.from_gate(gate, args.seed)
    margin = gate.groups.max_regression
    evidence = pd.read_parquet(args.evidence)
    z = stats.norm.ppf(1 - (1 - gate.confidence) / 2)
    rows = []
    for name, group in evidence.groupby(group_keys(evidence, gate.groups.by), sort=True):
        values = group[gate.primary].to_numpy(dtype=float)
        sd = float(values.std(ddof=1))
        for n in [len(values), *args.pairs]:
            simulated = pass_rate(values, n, margin, settings, args.draws, args.seed)
            low, high = wilson(simulated * args.draws, args.draws)
            rows.append({"group": name, "held_out_pairs": n, "measured": n == len(values), "sd": round(sd, 4),
                         "pass_simulated": round(simulated, 3), "pass_ci": [round(low, 3), round(high, 3)],
                         "pass_normal": round(float(1 - stats.norm.cdf(z - margin / (sd / np.sqrt(n)))), 3)})
    print(f"P(a group with no true change passes): margin {margin} ({gate.groups.by}, {gate.primary}), "
          f"{gate.confidence:.0%} {gate.ci_method}, B={gate.bootstrap_samples}, {args.draws} draws, seed {args.seed}")
    print(f"{'group':16} {'pairs':>6} {'sd':>7} {'simulated':>10} {'95% Wilson':>16} {'normal':>7}")
    for row in rows:
        print(f"{row['group']:16} {row['held_out_pairs']:>6} {row['sd']:>7.4f} {row['pass_simulated']:>10.3f} "
              f"  [{row['pass_ci'][0]:.3f}, {row['pass_ci'][1]:.3f}] {row['pass_normal']:>7.3f}"
              f"{'' if row['measured'] else '  (what-if)'}")
    print(json.dumps({"benchmark": "group_power", "evidence": args.evidence, "margin": margin, "draws": args.draws,
                      "seed": args.seed, "machine": platform.processor() or platform.machine(), "groups": rows}))


if __name__ == "__main__":
    main()
