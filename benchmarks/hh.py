"""HH-RLHF benchmark: every objective on the bundled sample, scored on held-out pairs.

Runs the pipeline's own stage functions (ingest, reference, cycles, evaluate) on
``params.yaml``; each objective starts from the same reference with the same steps, batch
and learning rate, with the per-cycle gate off so the objective is measured on its own, then
once more with the gated forget-and-relearn cycles of ``params.yaml``.

    python benchmarks/hh.py [--objectives d2o,npo,kto,ga,dpo] [--work DIR]

Prints a table and ends with one JSON line: objective → held-out metrics (separation with its
95% cluster-bootstrap interval, B = 2,000, seeded with ``seed``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import components  # noqa: F401  (quiet/offline defaults)
from components import stages
from components.params import load_params

REPO = Path(__file__).resolve().parent.parent
KEYS = ("neg_logp_delta", "pos_logp_delta", "separation", "separation_ci_low", "separation_ci_high", "pref_accuracy",
        "kl_ref", "distinct_2", "n_pairs")


def run(objective: str, overrides: dict, work: Path, params_file: Path) -> dict:
    params = load_params(params_file, overrides={"cycles.relearn.objective": objective, **overrides})
    out = work / objective
    started = time.perf_counter()
    summary = stages.cycles(params, work / "dataset", work / "reference", out / "policy", out / "cycles.json")
    seconds = time.perf_counter() - started
    metrics = stages.evaluate_held_out(params, work / "dataset", out / "policy", work / "reference",
                                       out / "metrics.json", out / "evidence.parquet")
    return {**{k: round(metrics[k], 4) for k in KEYS}, "accepted_cycles": summary["accepted_cycles"],
            "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="d2o,npo,kto,ga,dpo")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--work", default=None, help="folder for datasets and models (default: a temp folder)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="alignpipe-hh-"))
    params_file = Path(args.params)
    params = load_params(params_file)
    source = REPO / params.data.source
    stages.ingest(params, source, work / "dataset")
    stages.build_reference(params, work / "dataset", work / "reference")
    ungated = {"cycles.count": 1, "cycles.gate.enabled": False}
    results = {name: run(name, ungated, work, params_file) for name in args.objectives.split(",")}
    results["d2o+cycles (gated, params.yaml)"] = run("d2o", {}, work, params_file)
    keys = (*KEYS, "accepted_cycles", "seconds")
    print("\n| objective | " + " | ".join(keys) + " |\n" + "|---" * (len(keys) + 1) + "|")
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(str(row[k]) for k in keys) + " |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
