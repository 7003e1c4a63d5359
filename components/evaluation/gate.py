"""The registry gate: may a candidate replace the champion? Decided on intervals, fail closed.

Against the reference, a candidate must show, at the interval, that it separates chosen from
rejected (separation's lower bound > 0) and that its positives stay within budget. Against
the champion, on the same pairs, it must be significantly better on the primary metric and
not significantly worse on the others beyond their tolerances. A champion that cannot be
scored on the same pairs blocks promotion instead of being skipped, and so do too few pairs.
Per-group results are always reported; with ``gate.groups.rule: worst_group`` every group large
enough to judge must show it is not meaningfully worse (non-inferiority within
``gate.groups.max_regression``). Every check line states estimate, interval, n, B and seed.

All checks must pass (an intersection–union test), so each is made at the full confidence
level without a multiplicity correction; the "not worse" checks only make the gate stricter.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import pandas as pd

from components.evaluation.evidence import (METRICS, REFERENCE_LEVEL, direction, group_table,
                                            metric_intervals, paired_improvements)
from components.evaluation.intervals import BootstrapSettings, Interval
from components.params import GateParams

@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[str, ...]            # "PASS ..." / "FAIL ..." / "INFO ..." lines
    against: str                       # "reference" or "champion v3"
    rule: str                          # gate.groups.rule that was applied
    figures: dict[str, float] = field(default_factory=dict, compare=False)   # for MLflow metrics
    groups: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False)
    by: str = "source"                 # gate.groups.by that made the groups
    metric: str = "separation"         # gate.primary, which the groups are judged on

    def refused(self, reason: str) -> GateDecision:
        """This decision turned into a failure for ``reason`` (a FAIL line is added)."""
        return dataclasses.replace(self, passed=False, checks=(*self.checks, _line(False, reason)))

    def as_tags(self) -> dict[str, str]:
        return {"gate.passed": str(self.passed).lower(), "gate.against": self.against,
                "gate.groups.rule": self.rule, "gate.checks": "; ".join(self.checks)}


def _line(ok: bool | None, text: str) -> str:
    return f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'} {text}"


def _reference_checks(intervals: dict[str, Interval], gate: GateParams) -> list[str]:
    n = intervals["separation"].n
    enough = n >= gate.min_pairs
    separation, positives = intervals["separation"], intervals["pos_logp_delta"]
    return [
        _line(enough, f"held-out pairs: {n} >= gate.min_pairs {gate.min_pairs}" if enough else
              f"held-out pairs: only {n}, fewer than gate.min_pairs {gate.min_pairs}: too few for a meaningful interval"),
        _line(separation.low > 0, f"separation {separation.describe()}: lower bound > 0 (chosen gains on rejected "
                                  "against the reference)"),
        _line(positives.low >= -gate.max_pos_drop,
              f"pos_logp_delta {positives.describe()}: lower bound >= -{gate.max_pos_drop} (gate.max_pos_drop)"),
    ]


def _champion_checks(intervals: dict[str, Interval], champion: dict[str, Interval],
                     gains: dict[str, Interval], gate: GateParams, name: str) -> list[str]:
    lines = []
    for metric in (gate.primary, *(m for m in METRICS if m != gate.primary)):
        gain = gains[metric]
        values = (f"{metric} vs {name}: candidate {intervals[metric].estimate:.4f}, champion "
                  f"{champion[metric].estimate:.4f}; paired improvement {gain.describe()}")
        if metric == gate.primary:
            lines.append(_line(gain.low > gate.min_improvement,
                               f"{values}: lower bound > {gate.min_improvement} (gate.min_improvement)"))
        else:
            tolerance = getattr(gate.tolerance, metric)
            worse = gain.high < -tolerance
            lines.append(_line(not worse, f"{values}; tolerance {tolerance}: " +
                               ("significantly worse beyond the tolerance" if worse else "not significantly worse")))
    return lines


def _group_checks(table: pd.DataFrame, gate: GateParams) -> list[str]:
    """Non-inferiority per group: a group with at least ``gate.groups.min_pairs`` pairs must show,
    at its interval's worst end, that it is not more than ``gate.groups.max_regression`` worse
    than the reference level (and, with a champion, than the champion, paired). "No evidence of
    harm" would not do: a small group's wide interval crosses 0 whatever happened to it. Only
    ``worst_group`` turns a failure into a FAIL; ``pooled`` reports the same lines as INFO."""
    by, metric, judged = gate.groups.by, gate.primary, gate.groups.rule == "worst_group"
    sign, level, margin = direction(metric), REFERENCE_LEVEL[metric], gate.groups.max_regression
    lines = []
    for row in table.itertuples(index=False):
        text = f"group {by}={row.group}: {metric} {row.estimate:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}] (n={row.n_pairs})"
        if row.n_pairs < gate.groups.min_pairs:
            lines.append(_line(None, f"{text}: fewer than gate.groups.min_pairs {gate.groups.min_pairs}, not judged"))
            continue
        worst = sign * ((row.ci_low if sign > 0 else row.ci_high) - level)   # how far worse it may be, signed
        ok = worst >= -margin
        text += f": worst end {worst:+.4f} vs the reference {'>=' if ok else '<'} -{margin} (gate.groups.max_regression)"
        if "improvement" in table.columns:
            kept = row.improvement_ci_low >= -margin
            ok = ok and kept
            text += (f"; vs champion {row.improvement:+.4f} [{row.improvement_ci_low:.4f}, {row.improvement_ci_high:.4f}] "
                     f"{'>=' if kept else '<'} -{margin}")
        verdict = "not meaningfully worse" if ok else "may be meaningfully worse"
        lines.append(_line(ok if judged else None, f"{text}: {verdict} ({gate.groups.rule})"))
    return lines


def decide(candidate: pd.DataFrame, gate: GateParams, seed: int, champion: pd.DataFrame | None = None,
           champion_name: str = "", not_comparable: str = "") -> GateDecision:
    """Judge ``candidate``'s per-pair evidence (see ``metrics.pair_evidence``).

    ``champion`` is the champion's evidence on the same pairs; ``champion_name`` names the
    champion when one exists, and ``not_comparable`` says why it could not be scored (the gate
    then fails closed).
    """
    settings = BootstrapSettings.from_gate(gate, seed)
    intervals = metric_intervals(candidate, settings)
    checks = _reference_checks(intervals, gate)
    figures = {f"gate.{m}.{end}": getattr(v, end) for m, v in intervals.items() for end in ("low", "high")}
    comparable = champion is not None and not not_comparable
    if champion_name and not comparable:
        checks.append(_line(False, f"cannot compare with {champion_name} on the same pairs: "
                                   f"{not_comparable or 'no champion evidence'}; registered as challenger, not "
                                   "promoted (a person may still: alignpipe promote VERSION)"))
    if comparable:
        gains = paired_improvements(candidate, champion, settings)
        checks += _champion_checks(intervals, metric_intervals(champion, settings), gains, gate, champion_name)
        figures.update({f"gate.improvement.{m}.{end}": getattr(v, end)
                        for m, v in gains.items() for end in ("estimate", "low", "high")})
    groups = group_table(candidate, gate.groups.by, gate.primary, settings, champion if comparable else None)
    checks += _group_checks(groups, gate)
    passed = not any(line.startswith("FAIL") for line in checks)
    figures["gate.passed"] = float(passed)
    return GateDecision(passed, tuple(checks), champion_name or "reference", gate.groups.rule, figures, groups,
                        gate.groups.by, gate.primary)
