"""One project trained once per test session, for every end-to-end test that needs "a project
after ``alignpipe run``": training the smallest configuration is most of what such a test
costs, and most of them only read what it left.

The smallest configuration (``SMALLEST``) runs through ``alignpipe run`` as a newcomer runs it
(Prefect's temporary server; the session's MLflow registry, where it becomes ``MODEL_NAME``
v1) and is committed with its pipeline state. From then on the folder is only read: each test
works in a copy of its own (``TrainedProject.copy``: outputs, DVC cache, git history), so what
one test changes (data, params, outputs, ``dvc.lock``) no other test sees, in whatever order
they run. The session ends with an error naming the culprit's mistake if the folder changed.

The registry is shared, so a copy that registers again does so under its own
``registry.model_name``: the versions of ``MODEL_NAME`` stay the first run's alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from e2e_project import SMALLEST, alignpipe, commit, make_project, merge

MODEL_NAME = "shared-policy"
EXPERIMENT = "shared"
SETTINGS = merge(SMALLEST, {"registry": {"experiment": EXPERIMENT, "model_name": MODEL_NAME}})


@dataclass(frozen=True)
class TrainedProject:
    folder: Path                        # never run in: copy it
    run: subprocess.CompletedProcess    # the first `alignpipe run`, as it printed

    def copy(self, to: Path) -> Path:
        """A project of one's own at ``to`` (which must not exist yet), trained and committed."""
        return Path(shutil.copytree(self.folder, to, symlinks=True))

    def lock(self) -> dict:
        """The first run's ``dvc.lock``."""
        return yaml.safe_load((self.folder / "dvc.lock").read_text())


def fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """Every path under ``folder`` with its size and modification time."""
    return sorted((str(path.relative_to(folder)), path.lstat().st_size, path.lstat().st_mtime_ns)
                  for path in folder.rglob("*"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> TrainedProject:
    project = make_project(tmp_path_factory.mktemp("trained-project"), SETTINGS)
    newcomer = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}   # Prefect's temporary server
    done = alignpipe(project, "run", env=newcomer)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{MODEL_NAME} v1 registered" in done.stdout, done.stdout[-3000:]
    commit(project, "first run")
    before = fingerprint(project)
    yield TrainedProject(project, done)
    assert fingerprint(project) == before, f"a test wrote into the shared trained project {project}: use trained.copy()"
