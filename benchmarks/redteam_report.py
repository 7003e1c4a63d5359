"""The red-team benchmark's report: one table row per adapter and seed, and the summary over
seeds that BENCHMARKS.md §8 quotes (``redteam.py`` runs the seeds)."""

from __future__ import annotations

from redteam_corpus import ATTACKS, BENIGN
from tiers import column, spread


def accepted(t: dict) -> bool:
    """Whether the owner ends with a serving adapter: the first, or its repair."""
    return t["gate_passed"] or t.get("repair", {}).get("gate_passed", False)


def repaired(t: dict) -> str:
    """The repair's outcome in a table cell: its gate and failing lines, or why there was none."""
    if "repair" not in t:
        return "-"
    r = t["repair"]
    return f"{'accepted' if r['gate_passed'] else 'not accepted'}, {', '.join(r['gate_failing']) or 'none'}"


def fmt(rate: dict | None) -> str:
    return "-" if not rate else f"{rate['mean']:.3f} [{rate['ci'][0]:.3f}, {rate['ci'][1]:.3f}]"


def table(results: list[dict]) -> str:
    """One row per adapter and seed: the gate, the lines, the composed model's rates."""
    head = ("| adapter | seed | gate | refused by (tier-1 (a)/(b)) | other failing lines | harmful compliance: with "
            "(without) | safe-prompt refusals: with (without) | repaired: gate, failing | screening would set aside |")
    out = [head, "|" + "---|" * 9]
    for r in results:
        for name, t in r["training"].items():
            h, s, scr = t.get("harmful", {}), t.get("safe", {}), r["screening"].get(t["owner"], {})
            other = [f for f in t["gate_failing"] if f not in t["refused_by"]]
            out.append(f"| {name} | {r['seed']} | {'accepted' if t['gate_passed'] else 'not accepted'} | "
                       f"{', '.join(t['refused_by']) or ('**none**' if name in ATTACKS else 'none')} | "
                       f"{', '.join(other) or 'none'} | {fmt(h.get('rate_on'))} ({fmt(h.get('rate_off'))}) | "
                       f"{fmt(s.get('rate_on'))} ({fmt(s.get('rate_off'))}) | {repaired(t)} | "
                       f"{scr.get('screened', 0)}/{scr.get('rows', 0)}{' (too many)' if scr.get('too_many') else ''} |")
    return "\n".join(out)


def summary(results: list[dict]) -> dict:
    """Per attack: on how many seeds the gate refused it (tier-1 lines) and accepted it; benign
    owners' acceptance and cut; the false-alarm rate over every benign check line."""
    names = list(results[0]["training"])
    k = len(results)
    attacks = [n for n in names if n in ATTACKS]
    failed = sum(r["benign_false_alarms"]["failed"] for r in results)
    lines = sum(r["benign_false_alarms"]["lines"] for r in results)
    return {
        "seeds": column(results, "seed"), "machine": results[0]["machine"], "tag": results[0]["args"]["tag"],
        "refused_on_seeds": {n: f"{sum(column(results, 'training', n, 'refused'))}/{k}" for n in attacks},
        # refused by a margin line (a), not only by the sampled rate (b), which fresh samples alone can fail
        "refused_by_margin_on_seeds": {n: f"{sum(any('margin' in f for f in r['training'][n]['refused_by']) for r in results)}/{k}"
                                       for n in attacks},
        "placebo_b_failed": {rule: f"{sum(r['placebo'][rule]['failed'] for r in results)}/"
                                   f"{sum(r['placebo'][rule]['draws'] for r in results)}" for rule in results[0]["placebo"]},
        "accepted_on_seeds": {n: f"{sum(column(results, 'training', n, 'gate_passed'))}/{k}" for n in names},
        # the owner ends with a serving adapter: the first, or its repair (retrained with tier-1 pairs, gated again)
        "serving_after_repair_on_seeds": {n: f"{sum(accepted(r['training'][n]) for r in results)}/{k}" for n in names},
        "repaired_harmful_compliance": {n: [r["training"][n].get("repair", {}).get("harmful", {}).get("rate_on", {}).get("mean")
                                            for r in results] for n in names},
        "harmful_compliance_with_adapter": {n: column(results, "training", n, "harmful", "rate_on", "mean") for n in names
                                            if all("harmful" in r["training"][n] for r in results)},
        "benign_odds_cut": {n: column(results, "training", n, "own_behaviour", "odds_cut", "cut") for n in BENIGN},
        "benign_false_alarm_rate": {"failed": failed, "lines": lines, "rate": round(failed / lines, 4) if lines else None},
        "screened_fraction": {o: results[0]["screening"].get(o, {}).get("fraction") for o in
                              dict.fromkeys(results[0]["training"][n]["owner"] for n in names)},
        "targets": {t: all(column(results, "targets", t)) for t in results[0]["targets"]},
        "targets_held_on_seeds": {t: f"{sum(column(results, 'targets', t))}/{k}" for t in results[0]["targets"]},
        "seconds_per_seed": spread(column(results, "seconds"))}
