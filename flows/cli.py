"""``alignpipe``: the command line. Each command is a thin call into components or flows.

Errors that a user can fix (bad data, bad params, unknown model version) print one clear
message and exit with status 2; anything else is a bug and keeps its traceback.
``--params FILE`` and ``-S KEY=VALUE`` may come before or after the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from importlib.metadata import version
from pathlib import Path

import components  # noqa: F401  (quiet/offline defaults first)
from components.environment import ERROR_FILE_VARIABLE, params_choice, state_dir
from components.errors import UserError
from components.redact import mask_credentials
from flows.app_commands import add_app_command
from flows.server_commands import cmd_model_server, cmd_serve, cmd_services


def _params(args):
    from components.params import load_params

    return load_params(*params_choice(args.params, args.set))


def cmd_ingest(args) -> None:
    from components import stages

    manifest = stages.ingest(_params(args), args.source, Path(args.out))
    print(f"dataset {manifest['version']}: {manifest['n_rows']} rows {manifest['labels']} "
          f"splits {manifest['splits']} -> {args.out}")


def cmd_validate(args) -> None:
    from components import stages

    print(stages.load_records(args.source, _params(args)).summary())


def cmd_stage(args) -> None:
    if args.name == "params":  # light: runs before every pipeline
        from components.params import load_params
        from components.resolve import resolve_params

        named, overrides = params_choice(args.params, args.set)
        print(json.dumps(resolve_params(load_params(named, overrides), named, overrides)))
        return
    from components import stages
    from components.distributed import relaunch

    params = _params(args)
    if args.name == "cycles" and (status := relaunch(params.compute.processes)) is not None:
        sys.exit(status)   # it ran as compute.processes processes under torchrun
    run = {
        "simulate": lambda: stages.simulate(params),
        "ingest": lambda: stages.ingest(params),
        "reference": lambda: stages.build_reference(params),
        "cycles": lambda: stages.cycles(params),
        "evaluate": lambda: stages.evaluate_held_out(params),
    }[args.name]
    print(json.dumps(run(), default=str))


def cmd_evaluate(args) -> None:
    from components import stages
    from components.data.records import pairs
    from components.evaluation.evidence import group_table
    from components.evaluation.intervals import BootstrapSettings
    from components.evaluation.report import group_lines, metric_lines
    from components.registry.registry import local_model

    params = _params(args)
    loaded = stages.load_records(args.pairs, params)
    items = loaded.items if args.split == "all" else loaded.items[loaded.items["split"] == args.split]
    pair_frame = pairs(items)
    if args.max_pairs:
        pair_frame = pair_frame.head(args.max_pairs)
    model = local_model(args.model)
    reference, which = evaluation_reference(args, model.reference_dir)
    print(f"reference: {which}")
    generation, evidence = stages.evaluate(params, model.model_dir, pair_frame, reference)
    metrics = stages.summarize_evidence(params, evidence, generation, loaded.quarantined_rows)
    by, primary = params.gate.groups.by, params.gate.primary   # per group as the gate reports it
    groups = group_table(evidence, by, primary, BootstrapSettings.from_gate(params.gate, params.seed))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**metrics, "reference": which, "groups": {"by": by, "metric": primary,
                                                                        "rows": groups.to_dict("records")}},
                              indent=2) + "\n")
    evidence_file = out.with_name(out.stem + "-evidence.parquet")
    evidence.to_parquet(evidence_file, index=False)
    print("\n".join(metric_lines(metrics)))
    print(f"per group ({by}), {primary}:")
    print("\n".join(f"  {line}" for line in group_lines(groups, by, primary)))
    print(f"-> {out} (per-pair evidence: {evidence_file})")


def evaluation_reference(args, registered: Path | None) -> tuple[Path, str]:
    """The reference ``evaluate`` scores against, and a line saying which: ``--reference``
    when given; else the one the version was registered with, so that a champion scores the
    same months later whatever the working tree holds; else ``artifacts/reference``, with a
    note for a version registered before versions recorded their reference."""
    from components.stages import REFERENCE_DIR, reference_location

    if args.reference:
        return Path(args.reference), f"{args.reference} (--reference)"
    if registered is not None:
        pointer = reference_location(registered)
        named = f" ({pointer})" if pointer != str(registered) else ""
        return registered, f"the one {args.model} was registered with{named}"
    if Path(args.model).is_dir():
        return REFERENCE_DIR, f"{REFERENCE_DIR} (the working tree's)"
    return REFERENCE_DIR, (f"{REFERENCE_DIR}, the working tree's: note that {args.model} was registered before "
                           "versions recorded their reference, so it is scored against whatever the pipeline built "
                           "last (--reference chooses another)")


def cmd_run(args) -> None:
    from components.evaluation.report import group_lines, metric_lines
    from flows.retrain import retrain

    named, overrides = params_choice(args.params, args.set)
    state = retrain(root=args.root, params_file=named, overrides=overrides, wait_s=args.wait, return_state=True)
    result = flow_result(state)
    name = result.model_name
    if result.gate is None:
        print(f"\nalignpipe: {result.skipped}")
    else:
        print(f"\nalignpipe: {name} v{result.version} registered (alias 'challenger'); gate "
              f"{'PASSED: promoted to champion' if result.promoted else 'FAILED: champion unchanged'}")
        for check in result.gate.checks:
            print(f"  {check}")
    if result.gate is not None:
        gate = result.gate
        print(f"  per group ({gate.by}), {gate.metric} on the held-out pairs:")
        print("\n".join(f"    {line}" for line in group_lines(gate.groups, gate.by, gate.metric)))
    print(f"  cycles: {result.cycles}")
    print("  held-out (candidate against the reference):")
    for line in metric_lines(result.metrics):
        print(f"    {line}")
    print(where_to_look(name, result.champion, result.run_id))


class RunStopped(UserError):
    """The flow stopped on a user error; its lines were logged once, above."""


def flow_result(state):
    """A finished flow run's result; a user error it logged becomes :class:`RunStopped` (exit 2),
    a bug its exception (Prefect has logged the traceback; exit 1)."""
    if state.is_failed():
        crash = state.result(raise_on_failure=False)
        if isinstance(crash, BaseException):
            raise crash
        raise RunStopped(state.message)
    return state.result()


def where_to_look(model_name: str, champion: str | None, run_id: str) -> str:
    uri = mask_credentials(os.environ["MLFLOW_TRACKING_URI"])
    alias = "champion" if champion else "challenger"
    champion_line = (f"models:/{model_name}@champion (v{champion})" if champion else
                     "none yet: no candidate has passed the gate (its check lines say why); "
                     "a person may still `alignpipe promote VERSION`")
    bin_dir = Path(sys.executable).parent
    return f"""
Where to look:
  champion:   {champion_line}
  load it:    {sys.executable} -c "import components, mlflow; m = mlflow.pyfunc.load_model('models:/{model_name}@{alias}'); print(m.predict(['Human: Hi!\\n\\nAssistant:']))"
  MLflow UI:  {bin_dir / 'mlflow'} ui --backend-store-uri {uri} --port 5000   (run {run_id})
  Prefect UI: make prefect-ui   (then http://127.0.0.1:4200)
  status:     {bin_dir / 'alignpipe'} status
  metrics:    {bin_dir / 'dvc'} metrics show;  plots: {bin_dir / 'dvc'} plots show
  state:      {state_dir()}"""


def cmd_personalize(args) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.personalize import personalize

    named, overrides = params_choice(args.params, args.set)
    runner = ThreadPoolTaskRunner(max_workers=max(1, _params(args).tiers.concurrency))
    state = personalize.with_options(task_runner=runner)(root=args.root, params_file=named, overrides=overrides,
                                                         owner=args.owner, return_state=True)
    outcomes = flow_result(state)
    print("\nalignpipe personalize:")
    for outcome in outcomes:
        print(f"  {outcome.line()}")
    errors = [outcome.owner for outcome in outcomes if outcome.error]
    if errors:
        raise RunStopped(f"personalisation failed for {errors} (the log above says why); the other owners are done")


def cmd_simulate(args) -> None:
    from flows.simulate import simulate

    named, overrides = params_choice(args.params, args.set)
    state = simulate(root=args.root, params_file=named, overrides=overrides, return_state=True)
    summary = flow_result(state)
    print(f"\nalignpipe simulate: run {summary['run_id']}: {summary['drafts']} drafts by {summary['agents']} agents "
          f"over {summary['rounds']} rounds")
    for row in summary["by_round"]:
        print(f"  round {row['round']}: mean rating {row['mean_rating']:.2f}; observer {row['observer_before']:.2f} "
              f"(drafts) -> {row['observer_after']:.2f} (revisions)")
    print(f"  {summary['negatives']} drafts with mean rating <= {_params(args).sandbox.negative_max_score:g}, "
          f"{summary['pairs']} realignment pairs, {summary['derived_rows']} training rows")
    print("  records: artifacts/sandbox/interactions.jsonl; rows: artifacts/sandbox/feedback.jsonl "
          "(ingested when sandbox.enabled is true: alignpipe run -S sandbox.enabled=true)")


def cmd_adapter(args) -> None:
    from components.policy.policies import load_policies
    from components.registry import registry
    from components.registry.adapters import adapter_lines, adapter_model_name

    params = _params(args)
    if args.action == "list":
        print("\n".join(adapter_lines(load_policies(params.tiers.policies).owners())))
        return
    if not args.owner:
        raise UserError(f"alignpipe adapter {args.action} needs OWNER")
    name = adapter_model_name(args.owner)
    if args.action == "promote":
        if not args.version:
            raise UserError("alignpipe adapter promote needs OWNER VERSION")
        registry.promote(name, args.version, reason=args.reason)
        print(f"{name}@champion -> v{args.version}")
    else:
        print(f"{name}@champion -> v{registry.rollback(name)}")


def cmd_status(args) -> None:
    from components.overview import render_status

    print(render_status(_params(args), Path(args.root).resolve(), os.environ["MLFLOW_TRACKING_URI"]))


def cmd_promote(args) -> None:
    from components.registry import registry

    name = _params(args).registry.model_name
    registry.promote(name, args.version, reason=args.reason)
    print(f"{name}@champion -> v{args.version}")


def cmd_rollback(args) -> None:
    from components.registry import registry

    name = _params(args).registry.model_name
    print(f"{name}@champion -> v{registry.rollback(name)}")


def count_or_all(text: str) -> int:
    """A whole number >= 0 (0: all), for argparse: a negative count would silently drop rows."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: all), got {number}")
    return number


def _params_options(suppress: bool) -> argparse.ArgumentParser:
    """``--params`` and ``-S``, for the main parser and (without defaults, so that they do not
    reset what came before the command) for every command."""
    options = argparse.ArgumentParser(add_help=False)
    default = {"default": argparse.SUPPRESS} if suppress else {}
    options.add_argument("--params", metavar="FILE", help="configuration file (default: $ALIGNPIPE_PARAMS or "
                         "params.yaml)", **({"default": None} | default))
    options.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override one setting, "
                         "like `dvc exp run -S` (cycles.count=1); repeatable", **({"default": []} | default))
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignpipe", description=__doc__.splitlines()[0],
                                     parents=[_params_options(suppress=False)])
    parser.add_argument("--version", action="version", version=f"alignpipe {version('alignpipe')}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=[_params_options(suppress=True)])
        sub.set_defaults(func=func)
        return sub

    ingest = command("ingest", cmd_ingest, "read, validate and version a source of negative feedback")
    ingest.add_argument("--source", required=True, help="HH-RLHF JSONL(.gz), generic JSONL/Parquet, or a datasets folder")
    ingest.add_argument("--out", default="artifacts/dataset", help="dataset folder (default: %(default)s)")

    validate = command("validate", cmd_validate, "check a source against the validation suite; write nothing")
    validate.add_argument("--source", required=True)

    stage = command("stage", cmd_stage, "run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=["params", "simulate", "ingest", "reference", "cycles", "evaluate"])

    evaluate = command("evaluate", cmd_evaluate, "held-out metrics of a model against the reference")
    evaluate.add_argument("--model", required=True, help="local model folder or MLflow URI (models:/alignpipe-policy@champion)")
    evaluate.add_argument("--pairs", required=True, help="HH-format file (or any source with paired rows); odd rows "
                          "are quarantined as at ingest, every other pair is scored")
    evaluate.add_argument("--out", default="metrics.json", help="metrics file; per-pair evidence goes beside it "
                          "as <name>-evidence.parquet (default: %(default)s)")
    evaluate.add_argument("--max-pairs", type=count_or_all, default=0, help="score only the first N pairs (default: all)")
    evaluate.add_argument("--split", choices=["all", "train", "dev", "test"], default="all",
                          help="only the pairs whose prompts this split holds under the params' split rule (data.*): "
                          "`test` leaves out what a model trained with these params saw (default: %(default)s)")
    evaluate.add_argument("--reference", help="reference folder (default: the one a registered model was logged with; "
                          "else artifacts/reference)")

    run = command("run", cmd_run, "run the retrain flow once (stages, gate, register, promote)")
    run.add_argument("--root", default=".", help="project folder (default: current)")
    run.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="when another run holds the project, "
                     "wait up to SECONDS for it (default: stop at once, exit 2, naming the holder)")

    status = command("status", cmd_status, "champion, challenger, recent versions and stale stages")
    status.add_argument("--root", default=".", help="project folder (default: current)")

    serve = command("serve", cmd_serve, "serve the retrain flow on the params' schedule, against a Prefect "
                    "server you can open ($PREFECT_API_URL, or a local one started here)")
    serve.add_argument("--root", default=".")
    serve.add_argument("--port", type=int, default=4200, help="port of the local Prefect server to use or "
                       "start when $PREFECT_API_URL is unset (default: %(default)s)")

    promote = command("promote", cmd_promote, "move the champion alias to VERSION")
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted by hand")

    command("rollback", cmd_rollback, "move the champion alias back to the previous champion")

    services = command("services", cmd_services, "start, stop or check the team's services on loopback: "
                       "PostgreSQL, an MLflow server and a Prefect server on it, a worker running retrain")
    services.add_argument("action", choices=["up", "down", "status"])
    services.add_argument("--root", default=".", help="project whose retrain the worker runs (default: current)")
    services.add_argument("--postgres-port", type=int, default=5433)
    services.add_argument("--mlflow-port", type=int, default=5000)
    services.add_argument("--prefect-port", type=int, default=4200)
    services.add_argument("--purge", action="store_true", help="down: also delete their state (database, artifacts, logs)")

    personal = command("personalize", cmd_personalize, "train and gate a personal adapter for every deployer and "
                       "user of policies.yaml with new feedback or a moved base")
    personal.add_argument("--owner", help="only this deployer or user")
    personal.add_argument("--root", default=".", help="project folder (default: current)")

    simulate = command("simulate", cmd_simulate, "run the sandbox: agents draft, rate and revise; write validated "
                       "interaction records and the training rows derived from them (artifacts/sandbox)")
    simulate.add_argument("--root", default=".", help="project folder (default: current)")

    server = command("model-server", cmd_model_server, "serve a model folder or MLflow model URI over the OpenAI "
                     "chat protocol, for the sandbox's HTTP backend")
    server.add_argument("--model", required=True, help="model folder or models:/ URI")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000)

    adapter = command("adapter", cmd_adapter, "list personal adapters, promote one or roll one back")
    adapter.add_argument("action", choices=["list", "promote", "rollback"])
    adapter.add_argument("owner", nargs="?", help="a deployer or user of policies.yaml")
    adapter.add_argument("version", nargs="?", help="the version to promote")
    adapter.add_argument("--reason", default="promoted by hand")

    add_app_command(command)
    return parser


def report_user_error(command: str, err: Exception) -> None:
    """Print the error once; a stage run by the flow writes it to the flow's file instead,
    and the flow logs it (terminal and Prefect UI) with the stage's name."""
    error_file = os.environ.get(ERROR_FILE_VARIABLE)
    if error_file and command == "stage":
        Path(error_file).write_text(mask_credentials(str(err)))
    else:
        print(mask_credentials(f"alignpipe {command}: error: {err}"), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Where its errors are formatted, and so where credentials are masked:
    a user error and a tracking server that does not answer or refuses (whichever command
    met it) are one line, exit 2; a bug keeps its traceback, exit 1."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, FileNotFoundError) as err:
        report_user_error(args.command, err)
        return 2
    except Exception as err:
        from components.registry.tracking import server_failure

        if (failure := server_failure(err)) is not None:
            report_user_error(args.command, failure)
            return 2
        print(mask_credentials("".join(traceback.format_exception(err))), end="", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
