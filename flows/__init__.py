"""Orchestration: Prefect flows and the command line. Components know *how*; flows know
*when* and *in what order*, and own every change to the model registry."""

import os
from pathlib import Path

import components  # noqa: F401  (quiet/offline defaults before Prefect is imported)
from components.redact import mask_log_records

# Prefect, MLflow and DVC log errors that repeat the tracking URI, password and all: every
# record of a process that runs flows (the CLI, a worker, `alignpipe serve`) is masked.
mask_log_records()

# Prefect creates its home folder without parents; the state folder may not exist yet.
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
