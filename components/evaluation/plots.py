"""PNG plots of training and gate evidence, drawn without a display (matplotlib's Agg backend).

Plots are files, not dashboards: the stages write them under ``artifacts/plots`` (``dvc plots
show`` renders them offline) and the flow logs them to MLflow beside the numbers they show.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _save(figure, out: Path) -> Path:
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def plot_training_loss(history: pd.DataFrame, title: str, out: Path, boundaries: list[tuple[int, str]] = ()) -> Path:
    """Loss (left axis) and learning rate (right axis) per step; ``boundaries`` marks where
    each cycle's training starts, labelled (say, "cycle 2 reverted")."""
    figure, loss_axis = plt.subplots(figsize=(7, 3.6))
    loss_axis.plot(history["step"], history["loss"], color="tab:blue", label="loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    rate_axis = loss_axis.twinx()
    rate_axis.plot(history["step"], history["learning_rate"], color="tab:grey", linestyle=":", label="learning rate")
    rate_axis.set_ylabel("learning rate", color="tab:grey")
    for step, label in boundaries:
        loss_axis.axvline(step, color="black", linewidth=0.6)
        loss_axis.annotate(label, (step, 1.0), xycoords=("data", "axes fraction"), fontsize=8, va="top",
                           xytext=(3, -3), textcoords="offset points")
    loss_axis.set_title(title, fontsize=10)
    return _save(figure, out)


def plot_cycle_dev(cycles: pd.DataFrame, out: Path) -> Path:
    """Per cycle, on dev pairs: the paired separation gain over the policy before it, with its
    interval (the cycle gate), and the mean per-token change of positives and negatives."""
    figure, (gain_axis, delta_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    errors = [cycles["dev_separation_gain"] - cycles["dev_separation_gain_ci_low"],
              cycles["dev_separation_gain_ci_high"] - cycles["dev_separation_gain"]]
    colours = ["tab:green" if kept else "tab:red" for kept in cycles["accepted"]]
    for x, y, low, high, colour in zip(cycles["cycle"], cycles["dev_separation_gain"], *errors, colours):
        gain_axis.errorbar(x, y, yerr=[[low], [high]], fmt="o", capsize=4, color=colour)
    gain_axis.axhline(0, color="grey", linestyle="--")
    gain_axis.set_title("dev separation gain (green kept, red reverted)", fontsize=10)
    delta_axis.plot(cycles["cycle"], cycles["dev_pos_logp_delta"], "o-", label="positives")
    delta_axis.plot(cycles["cycle"], cycles["dev_neg_logp_delta"], "o-", label="negatives")
    delta_axis.axhline(0, color="grey", linestyle="--")
    delta_axis.set_title("dev per-token log-prob change vs reference", fontsize=10)
    delta_axis.legend(fontsize=8)
    for axis in (gain_axis, delta_axis):
        axis.set_xlabel("cycle")
        axis.set_xticks(list(cycles["cycle"]))
    return _save(figure, out)


def plot_reward_distributions(evidence: pd.DataFrame, beta: float, out: Path) -> Path:
    """Held-out positives and negatives: per-token log-prob under the reference (before) and
    the candidate (after), and the implicit reward β·(log π − log π_ref) per token after."""
    figure, (logp_axis, reward_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    sides = (("positives", "ref_pos_logp", "pos_logp_delta", "tab:blue"),
             ("negatives", "ref_neg_logp", "neg_logp_delta", "tab:red"))
    for name, before, delta, colour in sides:
        logp_axis.hist(evidence[before], bins=30, histtype="step", linestyle=":", color=colour, label=f"{name} before")
        logp_axis.hist(evidence[before] + evidence[delta], bins=30, histtype="step", color=colour, label=f"{name} after")
        reward_axis.hist(beta * evidence[delta], bins=30, alpha=0.5, color=colour, label=name)
    logp_axis.set_title("per-token log-prob: reference (dotted) vs candidate", fontsize=10)
    reward_axis.axvline(0, color="grey", linestyle="--")
    reward_axis.set_title(f"implicit reward per token, β={beta:g} (n={len(evidence)} pairs)", fontsize=10)
    for axis in (logp_axis, reward_axis):
        axis.legend(fontsize=8)
    return _save(figure, out)


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
    return _save(figure, out)
