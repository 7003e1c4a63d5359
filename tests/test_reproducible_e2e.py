"""Same machine, same params, clean state: the same DVC outputs, bit for bit.

The smallest configuration (the shared trained project's, ``trained_project.SETTINGS``) runs
through plain ``dvc repro`` in two fresh projects, one after the other; every output of every
stage, as ``dvc.lock`` hashes it, must be the same. This holds at a fixed number of torch threads:
a run with another thread count (another machine, or ``OMP_NUM_THREADS=1``) splits its
floating-point reductions differently and moves the log-probs in about the 8th significant digit
(measured; README, *Reproducible runs*). Measured in CI once: the shared project's own run, through
``alignpipe run``, differed from a plain ``dvc repro`` in the 8th digit of the cycles stage's
figures, the same size; why is not known yet, so this test compares like with like.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from e2e_project import BIN, make_project
from trained_project import SETTINGS

pytestmark = pytest.mark.slow
STAGES = {"params", "simulate", "ingest", "reference", "cycles", "evaluate"}


def output_hashes(project) -> dict[str, str]:
    """``{"stage: path": md5}`` for every output in ``dvc.lock``."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {f"{stage}: {out['path']}": out["md5"] for stage, entry in lock.items() for out in entry.get("outs", [])}


def repro(project) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_clean_runs_write_identical_outputs(tmp_path):
    runs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        project = make_project(tmp_path / name, SETTINGS)
        assert "Running stage 'reference'" in repro(project)      # from scratch
        runs.append(output_hashes(project))
    first, second = runs
    assert {key.split(":")[0] for key in first} == STAGES
    assert [key for key in first if first[key] != second.get(key)] == []
    assert first == second
