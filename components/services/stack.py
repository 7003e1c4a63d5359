"""The team's services on loopback: PostgreSQL, an MLflow server on it (artifacts proxied by
the server), a Prefect server on it, and a process worker polling the ``alignpipe`` pool.

Their state lives under ``<state>/services`` (the project's state folder): the cluster, the
artifact store, Prefect's home, logs, pid files and ``services.json`` (ports only; passwords
are in ``pgpass``, mode 0600, and nowhere else). Clients need two URLs, neither holding a
credential: :func:`client_exports`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from components.environment import state_dir
from components.services.postgres import HOST, Cluster
from components.services.processes import Service

WORK_POOL = "alignpipe"
DEPLOYMENT = "retrain/alignpipe"


@dataclass(frozen=True)
class Ports:
    postgres: int = 5433
    mlflow: int = 5000
    prefect: int = 4200


@dataclass(frozen=True)
class Stack:
    folder: Path
    ports: Ports

    @classmethod
    def here(cls, ports: Ports | None = None) -> Stack:
        """The project's stack: the ports it was started with unless others are given."""
        folder = state_dir() / "services"
        saved = folder / "services.json"
        if ports is None:
            ports = Ports(**json.loads(saved.read_text())["ports"]) if saved.exists() else Ports()
        return cls(folder, ports)

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.folder / "postgres", self.ports.postgres, self.folder / "pgpass")

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def prefect_api(self) -> str:
        return f"http://{HOST}:{self.ports.prefect}/api"

    def _bin(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def mlflow(self) -> Service:
        store = f"postgresql://mlflow@{HOST}:{self.ports.postgres}/mlflow"
        return Service("mlflow", [self._bin("mlflow"), "server", "--backend-store-uri", store,
                                  "--artifacts-destination", (self.folder / "mlflow-artifacts").as_uri(),
                                  "--host", HOST, "--port", str(self.ports.mlflow), "--workers", "1"],
                       f"{self.mlflow_url}/health", self.folder)

    def prefect(self) -> Service:
        return Service("prefect", [self._bin("prefect"), "server", "start", "--host", HOST, "--port",
                                   str(self.ports.prefect)], f"{self.prefect_api}/health", self.folder)

    def worker(self) -> Service:
        return Service("worker", [self._bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                                  "--name", "alignpipe-worker"], None, self.folder)

    def services(self) -> list[Service]:
        """In start order; stopped in reverse."""
        return [self.mlflow(), self.prefect(), self.worker()]

    def environment(self, service: str) -> dict[str, str]:
        """What a service process sees: no credential, only where pgpass is (servers)."""
        env = dict(os.environ) | {"PREFECT_HOME": str(self.folder / "prefect"), "PREFECT_UI_ENABLED": "true"}
        env.pop("PGPASSFILE", None)
        if service == "mlflow":
            env |= {"PGPASSFILE": str(self.cluster.pgpass), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        elif service == "prefect":
            env |= {"PGPASSFILE": str(self.cluster.pgpass), "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                    f"postgresql+asyncpg://prefect@{HOST}:{self.ports.postgres}/prefect"}
        else:  # the worker and the flow runs it starts: clients of both servers
            env |= client_exports(self)
        return env

    def start_backends(self) -> list[str]:
        """PostgreSQL, then the MLflow and Prefect servers on it; returns what was started now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "services.json").write_text(json.dumps({"ports": asdict(self.ports)}, indent=2) + "\n")
        started = []
        cluster = self.cluster
        if not cluster.initialised():
            cluster.init()
        if not cluster.running():
            cluster.start()
            started.append("postgres")
        for database in ("mlflow", "prefect"):
            cluster.ensure_database(database)
        for service in (self.mlflow(), self.prefect()):
            if service.start(self.environment(service.name)):
                started.append(service.name)
        return started

    def start_worker(self) -> bool:
        return self.worker().start(self.environment("worker"))

    def stop(self) -> list[str]:
        """Everything, worker first; returns what was running."""
        stopped = [service.name for service in reversed(self.services()) if service.stop()]
        if self.cluster.running():
            self.cluster.stop()
            stopped.append("postgres")
        return stopped

    def purge(self) -> None:
        """Delete the services' state (database, artifacts, logs) once they are stopped."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def status(self) -> dict[str, str]:
        """Each service: 'running', 'not answering' (alive but unhealthy) or 'stopped'."""
        found = {"postgres": "running" if self.cluster.running() else "stopped"}
        for service in self.services():
            found[service.name] = ("running" if service.healthy() else
                                   "not answering" if service.pid() is not None else "stopped")
        return found


def client_exports(stack: Stack) -> dict[str, str]:
    """The variables that point alignpipe, MLflow and Prefect clients at the stack."""
    return {"MLFLOW_TRACKING_URI": stack.mlflow_url, "PREFECT_API_URL": stack.prefect_api}
