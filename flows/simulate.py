"""The ``simulate`` flow: the sandbox, one task per round, then validation and derived rows.

A round that fails is retried; a run that dies resumes at the last finished round (each
round's log is written whole). The same component steps run as the DVC stage ``simulate``
when ``sandbox.enabled`` makes the sandbox part of the pipeline, so a scheduled ``retrain``
closes the loop: simulate (agents = the champion) → ingest → cycles → gate → next champion.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from components import stages
from components.errors import UserError
from components.params import load_params
from components.registry.tracking import server_failure
from components.sandbox import simulation


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1, task_run_name="round {number}")
def play(sandbox, out_dir: Path, number: int) -> dict:
    records = simulation.play_round(sandbox, out_dir, number)
    return {"round": number, "mean_rating": sum(sum(r["score"] for r in x["ratings"]) / len(x["ratings"])
                                                for x in records) / len(records)}


@task(cache_policy=NO_CACHE, task_run_name="validate and derive")
def finish(sandbox, out_dir: Path) -> dict:
    return simulation.finish(sandbox, out_dir)


def summary_markdown(summary: dict, out_dir: Path) -> str:
    rounds = "\n".join(f"| {r['round']} | {r['mean_rating']:.2f} | {r['observer_before']:.2f} | {r['observer_after']:.2f} |"
                       for r in summary["by_round"])
    figures = {k: summary[k] for k in ("drafts", "negatives", "pairs", "derived_rows", "observer_gain", "share_improved",
                                       "rater_alpha", "rater_observer_spearman", "rating_entropy")}
    return f"""# alignpipe simulate: run `{summary['run_id']}`

{summary['agents']} agents, {summary['rounds']} rounds. Agents: `{summary['backends']['agent']}`; raters:
`{summary['backends']['rater']}`; observer: `{summary['backends']['observer']}`.

| round | mean rating | observer, drafts | observer, revisions |
|---|---|---|---|
{rounds}

{chr(10).join(f'- {k}: {v}' for k, v in figures.items())}

Records: `{out_dir / simulation.INTERACTIONS_FILE}`; training rows: `{out_dir / simulation.FEEDBACK_FILE}`
(ingested with `sandbox.enabled: true`).
"""


@flow(name="simulate", log_prints=True)
def simulate(root: str = ".", params_file: str = "params.yaml", overrides: dict | None = None):
    """Every round of the sandbox not yet logged under ``artifacts/sandbox``, then the records'
    validation and the derived training rows. A user error ends the run Failed, logged once."""
    logger = get_run_logger()
    root_path = Path(root).resolve()
    out_dir = root_path / stages.SANDBOX_DIR
    with contextlib.chdir(root_path):   # the params' paths are relative to the project
        try:
            params = load_params(params_file, overrides or {})
            # in the flow, not a task: an alias it resolves on a server that is down, or a user
            # error, stops the run with one line, where a failed task logs a traceback
            sandbox = simulation.open_sandbox(params)
            for number in simulation.prepare(sandbox, out_dir):
                done = play(sandbox, out_dir, number)
                logger.info("round %d of %d: mean rating %.2f", number, params.sandbox.rounds, done["mean_rating"])
            summary = finish(sandbox, out_dir)
        except UserError as err:
            logger.error("%s", err)
            return Failed(message=f"simulate stopped: {err}".splitlines()[0])
        except Exception as err:
            if (failure := server_failure(err)) is None:
                raise
            logger.error("%s", failure)
            return Failed(message=f"simulate stopped: {failure}")
    create_markdown_artifact(key="simulate-summary", markdown=summary_markdown(summary, out_dir),
                             description=f"sandbox run {summary['run_id']}")
    return summary
