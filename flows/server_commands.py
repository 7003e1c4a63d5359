"""The ``alignpipe`` commands that start, stop or check long-running servers: ``serve`` (the
retrain schedule), ``services`` (the team's stack) and ``model-server`` (a model over the
OpenAI protocol). Apart from the other commands because they live as long as their servers;
``flows.cli`` parses their flags and reports their errors like any command's.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.environment import params_choice
from components.errors import UserError


def cmd_model_server(args) -> None:
    from components.params import load_params
    from components.sandbox.openai_server import serve

    params = load_params(*params_choice(args.params, args.set))
    print(f"serving {args.model} over the OpenAI chat protocol at http://{args.host}:{args.port}/v1 "
          f"(sandbox.model: http://{args.host}:{args.port}/v1); Ctrl-C stops", flush=True)
    serve(args.model, args.host, args.port, params.reference.trust_remote_code, params.reference.dtype)


def cmd_serve(args) -> None:
    from flows.prefect_server import visible_server

    named, overrides = params_choice(args.params, args.set)
    with visible_server(args.port) as ui_url:
        from prefect import serve  # only now: Prefect reads $PREFECT_API_URL when first imported

        from flows import personalize, retrain

        deployed = retrain.deployment(args.root, named, overrides)
        after = personalize.deployment(args.root, named, overrides)
        print(f"serving deployment 'retrain/retrain-scheduled' on cron {deployed.schedules[0].schedule.cron!r}, and "
              f"'personalize/personalize-after-retrain' after each completed retrain; runs and their logs: "
              f"{ui_url}; Ctrl-C stops", flush=True)
        serve(deployed, after)


def cmd_services(args) -> None:
    from components.services.stack import DEPLOYMENT, Ports, Stack, client_exports

    ports = Ports(args.postgres_port, args.mlflow_port, args.prefect_port) if args.action == "up" else None
    stack = Stack.here(ports)
    if args.action == "down":
        stopped = stack.stop()
        if args.purge:
            stack.purge()
        print(f"alignpipe services: stopped {', '.join(stopped) or 'nothing (none was running)'}"
              f"{f'; removed {stack.folder}' if args.purge else ''}")
        return
    if args.action == "up":
        started = stack.start_backends()
        os.environ.update(client_exports(stack))  # before Prefect is first imported: it reads the URL then
        from flows.team import deploy_retrain

        named, overrides = params_choice(args.params, args.set)
        deploy_retrain(stack, Path(args.root).resolve(), named, overrides)
        if stack.start_worker():
            started.append("worker")
        print(f"alignpipe services: started {', '.join(started) or 'nothing (all were running)'}; "
              f"deployment {DEPLOYMENT} (concurrency limit 1) on work pool 'alignpipe'")
    state = stack.status()
    print("\n".join(f"  {name:9} {found}" for name, found in state.items()))
    print(f"  state:    {stack.folder} (logs in logs/; passwords only in pgpass, mode 0600)")
    print("point a client at them (no credential in either URL):")
    print("\n".join(f"  export {name}={value}" for name, value in client_exports(stack).items()))
    print(f"run retrain through the worker:  prefect deployment run {DEPLOYMENT}")
    if args.action == "status" and any(found != "running" for found in state.values()):
        raise ServiceDown(f"not every service is running (alignpipe services up starts them; logs: {stack.folder / 'logs'})")


class ServiceDown(UserError):
    """``services status`` found a service stopped or not answering."""
