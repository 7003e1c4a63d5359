"""``kill -9`` at a random moment of a real cycles stage, then ``dvc repro``: the rerun resumes
where the killed one stopped and ends with the outputs of a run never interrupted, byte for
byte (DVC's hashes of ``artifacts/policy``; ``cycles.json`` but for its wall-clock seconds).

The moment is seeded: the test prints its seed and delay, and ``ALIGNPIPE_KILL_SEED=N``
repeats one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from e2e_project import BIN, set_params

pytestmark = pytest.mark.slow
# two cycles, each relearning 16 steps with a checkpoint every 4: a kill lands in a cycle's
# sampling, training or scoring, or between cycles
RESUMABLE = {"cycles.count": 2, "cycles.checkpoint_steps": 4, "cycles.relearn.steps": 16}
STAGE = [str(BIN / "alignpipe"), "--params", "artifacts/params.yaml", "stage", "cycles"]


def dvc(project, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def output_hashes(project) -> dict[str, str]:
    """DVC's hashes of the cycles stage's outputs, the policy's and the plots' (cycles.json
    holds wall-clock seconds: compared below without them)."""
    outs = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["cycles"]["outs"]
    return {out["path"]: out["md5"] for out in outs if out["path"] != "artifacts/cycles.json"}


def cycle_records(project) -> dict:
    summary = json.loads((project / "artifacts" / "cycles.json").read_text())
    for record in summary["cycles"]:
        record.pop("seconds", None)   # wall-clock time, never reproducible (being moved to MLflow only)
    return summary


def test_a_cycles_stage_killed_at_a_random_moment_resumes_to_the_same_outputs(trained, tmp_path):
    base = trained.copy(tmp_path / "base")   # the shared trained project's dataset and reference
    set_params(base, RESUMABLE)
    dvc(base, "repro", "reference")          # resolves the params the killed stage reads; nothing to train
    straight, killed = (shutil.copytree(base, tmp_path / name, symlinks=True) for name in ("straight", "killed"))

    started = time.monotonic()
    dvc(straight, "repro", "cycles")
    stage_seconds = time.monotonic() - started   # DVC's few seconds included: kill before 80% of it

    seed = int(os.environ.get("ALIGNPIPE_KILL_SEED", random.SystemRandom().randrange(10**6)))
    delay = random.Random(seed).uniform(0.05, 0.8) * stage_seconds
    print(f"kill seed {seed}: SIGKILL after {delay:.1f} s of a {stage_seconds:.1f} s stage")
    victim = subprocess.Popen(STAGE, cwd=killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    print("killed after:", victim.communicate()[0].strip().splitlines()[-1:])
    work = killed / "artifacts" / ".cycles-work"
    print("left to resume from:", sorted(str(p.relative_to(work)) for p in work.rglob("*")
                                         if p.name.startswith(("cycle-", "checkpoint-"))))

    rerun = dvc(killed, "repro", "cycles")

    print([line for line in rerun.stdout.splitlines() if "resuming" in line or "cycle " in line])
    assert output_hashes(killed) == output_hashes(straight)
    assert set(output_hashes(straight)) == {"artifacts/policy", "artifacts/plots/cycles"}
    assert cycle_records(killed) == cycle_records(straight)
    assert not any(work.iterdir()), "the work folder is removed once the outputs are written"
