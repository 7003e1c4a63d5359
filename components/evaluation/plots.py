"""PNG plots of gate evidence, drawn without a display (matplotlib's Agg backend).

Plots are files, not dashboards: they are logged to MLflow beside the numbers they show.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_group_intervals(table: pd.DataFrame, by: str, metric: str, out: Path, subtitle: str = "") -> Path:
    """A forest plot: one row per group, the estimate and its interval; with a champion,
    a second panel shows the paired improvement over it. Zero is drawn as a reference line."""
    panels = [("estimate", "ci_low", "ci_high", f"{metric} (candidate vs reference)")]
    if "improvement" in table.columns:
        panels.append(("improvement", "improvement_ci_low", "improvement_ci_high", f"{metric} improvement vs champion"))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.5 * len(table) + 1.8), squeeze=False)
    labels = [f"{group} (n={n})" for group, n in zip(table["group"], table["n_pairs"])]
    positions = range(len(table))
    for axis, (centre, low, high, title) in zip(axes[0], panels):
        errors = [table[centre] - table[low], table[high] - table[centre]]
        axis.errorbar(table[centre], positions, xerr=errors, fmt="o", capsize=4)
        axis.axvline(0.5 if metric == "pref_accuracy" and centre == "estimate" else 0.0, color="grey", linestyle="--")
        axis.set_yticks(list(positions), labels)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
    figure.suptitle(f"per-group intervals by {by}" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
