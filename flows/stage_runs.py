"""Each pipeline stage as a Prefect task run and a nested MLflow run, both live.

DVC decides whether a stage is stale and runs it (``alignpipe stage NAME``, in a child
process). Before it starts, the stage's MLflow run is opened and named to the child through
the environment, so per-step training metrics arrive while it trains and the run's
duration is the stage's. A stage that stops on a user error writes the error to a file the
flow gave it; the flow logs it once, with the stage's name, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.environment import ERROR_FILE_VARIABLE, OVERRIDES_VARIABLE, PARAMS_VARIABLE
from components.params import Params
from components.registry.tracking import LIVE_RUN_VARIABLE, log_finite_metrics

STAGE_PARAMS = {"simulate": ("seed", "sandbox"), "ingest": ("data", "validation"), "reference": ("seed", "reference", "sequence"),
                "cycles": ("cycles", "compute"), "evaluate": ("evaluate",)}


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    ran: bool          # False: DVC found it up to date
    seconds: float
    error: str = ""    # the user error that stopped it, if any


@contextlib.contextmanager
def child_environment(**variables: str):
    """Set variables for the processes DVC starts; restore the previous values after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def reproduce(stage: str, root: Path, upstream: bool) -> bool:
    """``dvc repro STAGE`` in-process (``upstream``: stale stages before it too); True if it ran.
    DVC's "git add dvc.lock" hint is left to the caller, to be given once."""
    from dvc.repo import Repo

    logging.getLogger("dvc").propagate = False  # DVC prints its own lines; Prefect's handlers would repeat them
    # DVC resolves stage targets against the working directory, not the Repo's root
    with contextlib.chdir(root), Repo(str(root)) as repo:
        repo.scm_context.quiet = True
        ran = repo.reproduce(stage, single_item=not upstream)
    return stage in {s.addressing for s in ran}


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def run_stage(stage: str, root: Path, params: Params, params_file: str, overrides: dict, parent_run_id: str,
              summary: Path, upstream: bool = False) -> StageOutcome:
    """Run ``stage`` through DVC inside its own nested MLflow run; log its params and the numbers
    of its JSON ``summary`` there. ``upstream`` (the first stage) also brings stale stages
    before it up to date, the ``params`` stage among them."""
    from dvc.exceptions import DvcException

    logger = get_run_logger()
    started = time.perf_counter()
    with mlflow.start_run(run_name=stage, nested=True) as run, tempfile.TemporaryDirectory() as scratch:
        mlflow.log_params({k: v for k, v in params.flat().items() if k.split(".")[0] in STAGE_PARAMS[stage]})
        error_file = Path(scratch) / "error.txt"
        variables = {LIVE_RUN_VARIABLE: f"{run.info.run_id},{parent_run_id}", ERROR_FILE_VARIABLE: str(error_file),
                     PARAMS_VARIABLE: params_file,
                     OVERRIDES_VARIABLE: json.dumps([f"{k}={json.dumps(v)}" for k, v in overrides.items()])}
        logger.info("stage %s: starting (DVC runs it if stale)", stage)
        try:
            with child_environment(**variables):
                ran = reproduce(stage, root, upstream)
        except DvcException:
            if not error_file.exists():
                raise  # not a user error: a bug keeps its traceback (and the runs end FAILED)
            error = error_file.read_text().strip()
            mlflow.set_tag("error", error[:5000])
            mlflow.end_run(status="FAILED")
            logger.error("stage %s failed:\n%s", stage, error)
            return StageOutcome(stage, True, time.perf_counter() - started, error)
        mlflow.set_tag("dvc.ran", str(ran).lower())
        if (root / summary).is_file():
            log_finite_metrics(json.loads((root / summary).read_text()))
    return StageOutcome(stage, ran, time.perf_counter() - started)
