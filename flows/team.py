"""The ``retrain`` deployment on the team's Prefect server, run by a process worker.

``alignpipe services up`` calls :func:`deploy_retrain` once the Prefect server answers: it
creates the ``alignpipe`` process work pool and deploys ``retrain`` to it with the project's
schedule, parameters and a concurrency limit of 1 (two runs of one project never overlap;
the project lock, ``components/project_lock.py``, covers runs started outside Prefect). The
entrypoint is a module path (``flows.retrain:retrain``): the worker's interpreter has
alignpipe installed, so no code is copied anywhere. Import this module only after
``$PREFECT_API_URL`` names the server: Prefect reads it at import.
"""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectAlreadyExists
from prefect.utilities.asyncutils import run_coro_as_sync

from components.params import load_params
from components.services.stack import DEPLOYMENT, WORK_POOL, Stack, client_exports
from flows.retrain import retrain


async def _create_pool() -> None:
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy_retrain(stack: Stack, root: Path, params_file: str, overrides: dict) -> str:
    """Create the pool if needed and (re)deploy ``retrain`` for ``root``; returns its id."""
    run_coro_as_sync(_create_pool())
    params_path = Path(params_file) if Path(params_file).is_absolute() else root / params_file
    params = load_params(params_path, overrides)
    deployment_id = retrain.deploy(
        name=DEPLOYMENT.split("/")[1], work_pool_name=WORK_POOL, build=False, push=False,
        entrypoint_type=EntrypointType.MODULE_PATH, cron=params.schedule.cron, concurrency_limit=1,
        parameters={"root": str(root), "params_file": str(params_path), "overrides": overrides},
        job_variables={"working_dir": str(root), "env": client_exports(stack)}, print_next_steps=False,
        ignore_warnings=True,
        description=f"alignpipe retrain of {root} ({params_path.name}), on the team's servers")
    return str(deployment_id)
