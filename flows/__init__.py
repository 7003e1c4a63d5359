"""Orchestration: Prefect flows and the command line. Components know *how*; flows know
*when* and *in what order*, and own every change to the model registry."""

import components  # noqa: F401  (quiet/offline defaults before Prefect is imported)
