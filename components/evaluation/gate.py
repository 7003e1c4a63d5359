"""Evaluation gates: may a candidate replace the champion? Pure, explainable decisions.

Each rule yields a readable check line, so a decision can be shown, logged as model
version tags and audited. A candidate must beat the reference on its own, and then be at
least as good as the current champion on the same held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.params import GateParams


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[str, ...]      # "PASS ..." / "FAIL ..." lines
    against: str                 # "reference" or "champion v3"

    def as_tags(self) -> dict[str, str]:
        return {"gate.passed": str(self.passed).lower(), "gate.against": self.against,
                "gate.checks": "; ".join(self.checks)}


def _check(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} {text}"


def decide(candidate: dict, gate: GateParams, champion: dict | None = None, champion_name: str = "") -> GateDecision:
    checks = [
        _check(candidate["neg_logp_delta"] < gate.max_neg_logp_delta,
               f"neg_logp_delta {candidate['neg_logp_delta']:.4f} < {gate.max_neg_logp_delta}"),
        _check(candidate["pref_accuracy"] >= gate.min_pref_accuracy,
               f"pref_accuracy {candidate['pref_accuracy']:.3f} >= {gate.min_pref_accuracy}"),
        _check(candidate["pos_logp_delta"] >= -gate.max_pos_drop,
               f"pos_logp_delta {candidate['pos_logp_delta']:.4f} >= {-gate.max_pos_drop}"),
    ]
    if champion is not None:
        bar = champion["neg_logp_delta"] - gate.min_improvement
        checks.append(_check(candidate["neg_logp_delta"] <= bar,
                             f"neg_logp_delta {candidate['neg_logp_delta']:.4f} <= champion's {bar:.4f}"))
        floor = champion["pref_accuracy"] - gate.pref_tolerance
        checks.append(_check(candidate["pref_accuracy"] >= floor,
                             f"pref_accuracy {candidate['pref_accuracy']:.3f} >= champion's {floor:.3f}"))
    passed = all(c.startswith("PASS") for c in checks)
    return GateDecision(passed, tuple(checks), champion_name if champion is not None else "reference")
