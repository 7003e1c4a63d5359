"""How a gate decision and its evidence read to a person: one rendering for the terminal,
the Prefect summary and the registered version's description, so they never disagree."""

from __future__ import annotations

import math

import pandas as pd

from components.evaluation.evidence import METRICS
from components.evaluation.gate import GateDecision


def metric_lines(metrics: dict) -> list[str]:
    """``separation 0.0412 [0.0213, 0.0601]`` per metric, then n, B, seed and what was set aside."""
    lines = [f"{m} {metrics[m]:.4f} [{metrics[f'{m}_ci_low']:.4f}, {metrics[f'{m}_ci_high']:.4f}]"
             for m in METRICS if m in metrics]
    if "n_pairs" in metrics:
        lines.append(f"n_pairs {metrics['n_pairs']} (clusters {metrics.get('n_clusters', '?')}), "
                     f"{metrics.get('confidence', 0.95):.0%} {metrics.get('ci_method', '')} bootstrap, "
                     f"B={metrics.get('bootstrap_samples', '?')}, seed={metrics.get('bootstrap_seed', '?')}")
    if "quarantined_rows" in metrics:
        lines.append(f"quarantined_rows {metrics['quarantined_rows']}")
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def group_lines(table: pd.DataFrame, by: str, metric: str) -> list[str]:
    """The per-group table as aligned text lines (terminal): group, pairs, ``metric`` and its
    interval, and, against a champion, the paired improvement; the figures the gate judges
    groups on, without its verdicts."""
    if table.empty:
        return ["(no groups)"]
    width = max(len(by), *(len(str(g)) for g in table["group"]))
    against = "improvement" in table.columns
    lines = [f"{by:<{width}}  {'pairs':>5}  {metric:>10}  {'95% interval':<18}" + ("  vs champion" if against else "")]
    for row in table.itertuples(index=False):
        line = f"{row.group:<{width}}  {row.n_pairs:>5}  {_cell(row.estimate):>10}  [{_cell(row.ci_low)}, {_cell(row.ci_high)}]"
        if against:
            line += f"  {row.improvement:+.4f} [{_cell(row.improvement_ci_low)}, {_cell(row.improvement_ci_high)}]"
        lines.append(line)
    return lines


def group_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no groups)"
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, *rows])


def decision_markdown(decision: GateDecision, primary: str, by: str) -> str:
    """The decision first, then why: every check line, then the per-group table."""
    verdict = "PASSED: promote" if decision.passed else "FAILED: do not promote"
    # brackets escaped: "[0.0000, 0.0000]: ..." would otherwise read as a markdown link definition
    checks = "\n".join(f"- {line}".replace("[", "\\[") for line in decision.checks)
    return (f"**Gate {verdict}** (against {decision.against}; group rule `{decision.rule}`)\n\n{checks}\n\n"
            f"Per group (`{by}`), {primary}:\n\n{group_markdown(decision.groups)}\n")
