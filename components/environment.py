"""Project-wide defaults: where state lives and which libraries stay quiet and offline.

Set here, once, so that the CLI, DVC stages, Prefect flows and tests all see the same
settings without anyone exporting variables by hand. Explicit user settings always win
(``os.environ.setdefault``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STATE_DIR_NAME = ".alignpipe"

QUIET_OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "INFO",   # flow-run pages show stage progress and the gate decision
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # the temporary Prefect server of `alignpipe run` may start slowly on a busy laptop (its
    # default, 20 s, fails a second run started beside a training one)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # a tracking server that blinks is retried (waits 1, 2, 4, 8, 16 s per request); one that
    # stays down fails the run in about half a minute, not MLflow's default of minutes
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}

# How the flow speaks to the stages DVC starts for it (``alignpipe stage NAME``, another process):
# named here, below both the flow and the CLI, so that neither imports the other for them.
PARAMS_VARIABLE = "ALIGNPIPE_PARAMS"          # the params file when --params is not given
OVERRIDES_VARIABLE = "ALIGNPIPE_SET"          # JSON list of KEY=VALUE, applied before any -S
ERROR_FILE_VARIABLE = "ALIGNPIPE_ERROR_FILE"  # where a stage's user error goes, for the flow to log once


def params_choice(named: str | None, assignments: list[str] | None) -> tuple[str, dict]:
    """The params file and overrides a command uses: its flags (``--params``, ``-S``) first,
    then the environment (how the flow tells the stages which file and overrides the user
    gave), then params.yaml."""
    from components.params import parse_assignments

    inherited = json.loads(os.environ.get(OVERRIDES_VARIABLE) or "[]")
    return named or os.environ.get(PARAMS_VARIABLE) or "params.yaml", parse_assignments(inherited + list(assignments or []))


def project_root() -> Path:
    """The folder holding ``params.yaml``: ``$ALIGNPIPE_PROJECT`` or the working directory."""
    return Path(os.environ.get("ALIGNPIPE_PROJECT", os.getcwd())).resolve()


def state_dir() -> Path:
    """Local MLflow/Prefect state for the embedded default (``$ALIGNPIPE_HOME`` overrides)."""
    return Path(os.environ.get("ALIGNPIPE_HOME", project_root() / STATE_DIR_NAME)).resolve()


def default_tracking_uri() -> str:
    """An absolute sqlite URI: MLflow's relative default depends on the working directory."""
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def apply_defaults() -> None:
    """Fill in quiet/offline variables, state locations and the interpreter's bin on PATH.

    The bin folder goes on PATH so that ``dvc repro`` started from ``.venv/bin/alignpipe``
    finds the ``alignpipe`` command its stages call, even in a shell without the venv.
    """
    for name, value in QUIET_OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_HOME", str(state_dir() / "prefect"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
