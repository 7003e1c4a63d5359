"""Small MLflow tracking helpers shared by the flow, the CLI and the tests."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from components.environment import state_dir
from components.errors import UserError
from components.redact import mask_credentials
from components.services.processes import probe

REFUSALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")   # MLflow's error codes for HTTP 401 and 403


class TrackingServerError(UserError):
    """The tracking server does not answer, or refuses: nothing in the code to fix, so one
    line naming it (credentials masked) and exit status 2, never a traceback."""


def server_problem(uri: str | None = None) -> TrackingServerError | None:
    """What is wrong with the tracking server at ``uri`` (default: the one in use) when it does
    not answer ``/health`` with 200 within two seconds; None when it does, or when the URI is
    a local store (sqlite, a folder)."""
    uri = mlflow.get_tracking_uri() if uri is None else uri
    if not uri.startswith(("http://", "https://")):
        return None
    why = probe(f"{uri.rstrip('/')}/health")
    return None if why is None else TrackingServerError(f"the MLflow tracking server at {mask_credentials(uri)} {why}")


def server_failure(err: BaseException, uri: str | None = None) -> TrackingServerError | None:
    """``err`` as the tracking server's failure when the server is why it happened: it does not
    answer (MLflow has retried by then, so a server that blinks is waited for) or it refused
    the request (HTTP 401/403: the credentials). None when the server is fine: then ``err`` is
    what it is, a user error or a bug with its traceback. Every command and flow asks here."""
    if (down := server_problem(uri)) is not None:
        return down
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, MlflowException) and cause.error_code in REFUSALS:
            uri = mask_credentials(mlflow.get_tracking_uri() if uri is None else uri)
            return TrackingServerError(f"the MLflow tracking server at {uri} refuses the request ({cause.error_code}): "
                                       "check the credentials (in MLFLOW_TRACKING_URI, or MLFLOW_TRACKING_USERNAME "
                                       "and MLFLOW_TRACKING_PASSWORD)")
        cause = cause.__cause__ or cause.__context__
    return None


def artifact_root() -> str | None:
    """Where new experiments keep artifacts: absolute, under the state dir; None (the
    server's proxied store) when the tracking URI is a server.

    MLflow's default artifact root is relative to the working directory, so runs started from
    different folders would scatter artifacts; an explicit location avoids that.
    """
    if mlflow.get_tracking_uri().startswith(("http://", "https://")):
        return None
    return (state_dir() / "mlartifacts").as_uri()


def ensure_experiment(name: str) -> str:
    """Create experiment ``name`` (artifacts under the state dir) if needed; make it active.

    Returns the experiment id. An existing experiment keeps its artifact location.
    """
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, artifact_location=artifact_root())
    elif experiment.lifecycle_stage == "deleted":
        raise mlflow.MlflowException(
            f"experiment {name!r} is deleted; restore it (mlflow experiments restore) or pick another name"
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def finite_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """The entries that are real, finite numbers (MLflow rejects NaN/inf or logs them oddly)."""
    finite = {}
    for key, value in metrics.items():
        if isinstance(value, (str, bytes)):
            continue
        try:
            number = float(value)  # numbers, numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            finite[key] = number
    return finite


def log_finite_metrics(metrics: Mapping[str, object], step: int | None = None) -> dict[str, float]:
    """Log the finite numeric entries of ``metrics`` to the active run; returns what was logged."""
    finite = finite_metrics(metrics)
    if finite:
        mlflow.log_metrics(finite, step=step)
    return finite


LIVE_RUN_VARIABLE = "ALIGNPIPE_MLFLOW_RUN_ID"


def log_live(metrics: Mapping[str, object], step: int) -> None:
    """Log ``metrics`` at ``step`` to the MLflow runs named by ``$ALIGNPIPE_MLFLOW_RUN_ID``
    (comma-separated), if any: nothing happens outside a flow.

    The flow opens a run for each stage and DVC starts the stage in a child process; the
    child logs into that run (and the parent retrain run) while it trains, so metric history
    and durations are real.
    """
    run_ids = [run_id for run_id in os.environ.get(LIVE_RUN_VARIABLE, "").split(",") if run_id]
    finite = finite_metrics(metrics)
    if not run_ids or not finite:
        return
    now = int(time.time() * 1000)
    client = mlflow.MlflowClient()
    for run_id in run_ids:
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in finite.items()])
