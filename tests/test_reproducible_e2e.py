"""Same machine, same params, clean state: the same DVC outputs, bit for bit.

The smallest configuration runs through ``dvc repro`` in two fresh projects, one after the
other; every output of every stage, as ``dvc.lock`` hashes it, must be the same. This holds at a
fixed number of torch threads: a run with another thread count (another machine, or
``OMP_NUM_THREADS=1``) splits its floating-point reductions differently and moves the log-probs
in about the 8th significant digit (measured; README, *Reproducible runs*).
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from e2e_project import BIN, SMALLEST, make_project, merge

pytestmark = pytest.mark.slow
SMALLEST_TINY = merge(SMALLEST, {"reference": {"sft": {"steps": 40}}})   # a shorter SFT: under 3 minutes for both runs
STAGES = {"params", "simulate", "ingest", "reference", "cycles", "evaluate"}


def output_hashes(project) -> dict[str, str]:
    """``{"stage: path": md5}`` for every output in ``dvc.lock``."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {f"{stage}: {out['path']}": out["md5"] for stage, entry in lock.items() for out in entry.get("outs", [])}


def test_two_clean_runs_write_identical_outputs(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    runs = []
    for name in ("first", "second"):
        project = tmp_path / name
        project.mkdir()
        make_project(project, SMALLEST_TINY)
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, env=env, check=True, capture_output=True)
        runs.append(output_hashes(project))
    first, second = runs
    assert {key.split(":")[0] for key in first} == STAGES
    assert [key for key in first if first[key] != second.get(key)] == []
    assert first == second
