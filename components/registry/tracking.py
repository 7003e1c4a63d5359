"""Small MLflow tracking helpers shared by the flow, the CLI and the tests."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.entities import Metric

from components.environment import state_dir


def safe_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for printing and logging."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


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
