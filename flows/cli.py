"""``alignpipe``: the command line. Each command is a thin call into components or flows.

Errors that a user can fix (bad data, bad params, unknown model version) print one clear
message and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import components  # noqa: F401  (quiet/offline defaults first)
from components.environment import state_dir
from components.errors import UserError



def _params(args):
    from components.params import load_params

    return load_params(args.params)


def cmd_ingest(args) -> None:
    from components import stages

    manifest = stages.ingest(_params(args), args.source, Path(args.out))
    print(f"dataset {manifest['version']}: {manifest['n_rows']} rows {manifest['labels']} "
          f"splits {manifest['splits']} -> {args.out}")


def cmd_validate(args) -> None:
    from components import stages

    print(stages.load_records(args.source, _params(args)).summary())


def cmd_stage(args) -> None:
    from components import stages

    params = _params(args)
    run = {
        "ingest": lambda: stages.ingest(params),
        "reference": lambda: stages.build_reference(params),
        "cycles": lambda: stages.cycles(params),
        "evaluate": lambda: stages.evaluate_held_out(params),
    }[args.name]
    print(json.dumps(run(), indent=2, default=str))


def cmd_evaluate(args) -> None:
    from components import stages
    from components.data.records import pairs
    from components.evaluation.report import metric_lines
    from components.registry.registry import local_model_dir

    params = _params(args)
    loaded = stages.load_records(args.pairs, params)
    pair_frame = pairs(loaded.items)
    if args.max_pairs:
        pair_frame = pair_frame.head(args.max_pairs)
    generation, evidence = stages.evaluate(params, local_model_dir(args.model), pair_frame, Path(args.reference))
    metrics = stages.summarize_evidence(params, evidence, generation, loaded.quarantined_rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    evidence_file = out.with_name(out.stem + "-evidence.parquet")
    evidence.to_parquet(evidence_file, index=False)
    print("\n".join(metric_lines(metrics)))
    print(f"-> {out} (per-pair evidence: {evidence_file})")


def cmd_run(args) -> None:
    from components.evaluation.report import metric_lines
    from flows.retrain import retrain

    result = retrain(root=args.root)
    name = _params(args).registry.model_name
    if result.gate is None:
        print(f"\nalignpipe: {result.skipped}")
    else:
        print(f"\nalignpipe: {name} v{result.version} registered (alias 'challenger'); gate "
              f"{'PASSED: promoted to champion' if result.promoted else 'FAILED: champion unchanged'}")
        for check in result.gate.checks:
            print(f"  {check}")
    print(f"  cycles: {result.cycles}")
    print("  held-out (candidate against the reference):")
    for line in metric_lines(result.metrics):
        print(f"    {line}")
    print(where_to_look(name, result.champion))


def where_to_look(model_name: str, champion: str | None) -> str:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    alias = "champion" if champion else "challenger"
    champion_line = (f"models:/{model_name}@champion (v{champion})" if champion else
                     "none yet: no candidate has passed the gate (its check lines say why); "
                     "a person may still `alignpipe promote VERSION`")
    return f"""
Where to look:
  champion:   {champion_line}
  load it:    MLFLOW_TRACKING_URI={uri} python -c "import mlflow; m = mlflow.pyfunc.load_model('models:/{model_name}@{alias}'); print(m.predict(['Human: Hi!\\n\\nAssistant:']))"
  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000
  metrics:    .venv/bin/dvc metrics show
  state:      {state_dir()}"""


def cmd_serve(args) -> None:
    from prefect import serve

    from flows.retrain import deployment

    deployed = deployment(args.root)
    print(f"serving deployment 'retrain/retrain-scheduled' on cron {deployed.schedules[0].schedule.cron!r}; Ctrl-C stops")
    serve(deployed)


def cmd_promote(args) -> None:
    from components.registry import registry

    name = _params(args).registry.model_name
    registry.promote(name, args.version, reason=args.reason)
    print(f"{name}@champion -> v{args.version}")


def cmd_rollback(args) -> None:
    from components.registry import registry

    name = _params(args).registry.model_name
    print(f"{name}@champion -> v{registry.rollback(name)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="configuration file (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="read, validate and version a source of negative feedback")
    ingest.add_argument("--source", required=True, help="HH-RLHF JSONL(.gz), generic JSONL/Parquet, or a datasets folder")
    ingest.add_argument("--out", default="artifacts/dataset", help="dataset folder (default: %(default)s)")
    ingest.set_defaults(func=cmd_ingest)

    validate = commands.add_parser("validate", help="check a source against the validation suite; write nothing")
    validate.add_argument("--source", required=True)
    validate.set_defaults(func=cmd_validate)

    stage = commands.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=["ingest", "reference", "cycles", "evaluate"])
    stage.set_defaults(func=cmd_stage)

    evaluate = commands.add_parser("evaluate", help="held-out metrics of a model against the reference")
    evaluate.add_argument("--model", required=True, help="local model folder or MLflow URI (models:/alignpipe-policy@champion)")
    evaluate.add_argument("--pairs", required=True, help="HH-format file (or any source with paired rows); odd rows "
                          "are quarantined as at ingest, every other pair is scored")
    evaluate.add_argument("--out", default="metrics.json", help="metrics file; per-pair evidence goes beside it "
                          "as <name>-evidence.parquet (default: %(default)s)")
    evaluate.add_argument("--max-pairs", type=int, default=0, help="score only the first N pairs (default: all)")
    evaluate.add_argument("--reference", default="artifacts/reference", help="reference folder (default: %(default)s)")
    evaluate.set_defaults(func=cmd_evaluate)

    run = commands.add_parser("run", help="run the retrain flow once (stages, gate, register, promote)")
    run.add_argument("--root", default=".", help="project folder (default: current)")
    run.set_defaults(func=cmd_run)

    serve = commands.add_parser("serve", help="serve the retrain flow as a Prefect deployment on the params.yaml schedule")
    serve.add_argument("--root", default=".")
    serve.set_defaults(func=cmd_serve)

    promote = commands.add_parser("promote", help="move the champion alias to VERSION")
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted by hand")
    promote.set_defaults(func=cmd_promote)

    rollback = commands.add_parser("rollback", help="move the champion alias back to the previous champion")
    rollback.set_defaults(func=cmd_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, FileNotFoundError) as err:
        print(f"alignpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
