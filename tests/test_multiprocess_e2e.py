"""``compute.processes: 2``: the cycles stage under torchrun, two CPU processes (gloo), each
sampling and scoring half of the anchors and training on half of every batch, against the
same project in one process.

Both sample the very same anchors (each batch of prompts has its own seed) and train on the
same examples each step, so only arithmetic differs: DDP averages two half-batch gradients
where one process takes the mean over the whole batch, and each torchrun process computes
with one thread (OMP_NUM_THREADS=1), the single process with two; float sums in another order
differ in their last bits, and 2 x 8 Adam steps carry that on. TOLERANCE is what that
leaves on the metrics, measured.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from e2e_project import BIN, set_params

pytestmark = pytest.mark.slow
CYCLES = {"cycles.count": 2, "cycles.relearn.steps": 8, "cycles.gate.enabled": False}
# measured: at most 6.1e-8 (cycle 1 dev_neg_logp_delta; pref_accuracy equal), float32 rounding
TOLERANCE = 1e-5   # nats/token on the log-prob deltas and the loss, share on pref_accuracy
COMPARED = ("dev_neg_logp_delta", "dev_pos_logp_delta", "dev_separation", "dev_pref_accuracy", "relearn_train_loss")


def repro(project, target: str) -> str:
    done = subprocess.run([str(BIN / "dvc"), "repro", target], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_processes_train_the_policy_one_process_trains(trained, tmp_path):
    """Both projects are copies of the shared trained one (its dataset and reference), with
    the cycles stage's settings changed, so that only it runs again."""
    one, two = (trained.copy(tmp_path / name) for name in ("one", "two"))
    set_params(one, CYCLES)
    set_params(two, CYCLES | {"compute.processes": 2})

    outputs = [repro(project, "cycles") for project in (one, two)]

    cycles = [json.loads((p / "artifacts" / "cycles.json").read_text())["cycles"] for p in (one, two)]
    differences = {f"cycle {a['cycle']} {key}": abs(a[key] - b[key]) for a, b in zip(*cycles) for key in COMPARED}
    print(json.dumps(differences, indent=1))
    assert "2 processes under torchrun" in outputs[1] and "torchrun" not in outputs[0]
    assert len(cycles[1]) == 2 and all(cycle["dev_neg_logp_delta"] < 0 for cycle in cycles[1])  # it did train
    assert max(differences.values()) <= TOLERANCE, differences
