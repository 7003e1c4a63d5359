"""The cycles stage's work folder: what a rerun after a kill resumes from.

It sits beside the stage's outputs but is none of them (DVC neither caches nor clears it),
in a subfolder named by a hash of every input of the stage's result, so a changed input
starts afresh instead of resuming stale state. After each finished cycle it holds the policy
(safetensors), the cycle records, the best dev evidence, the anchors, the relearn loss
history and the RNG states, written under a temporary name and renamed (a kill leaves the
previous cycle's state whole); within a cycle, relearn's checkpoints (``checkpoints.py``).
Nothing in it is a pickle. The stage removes it once its outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from components.atomic import replaced_folder
from components.distributed import is_writer
from components.training.anchors import AnchorSet

STATE = "state.json"
POLICY = "policy.safetensors"
TENSORS = "tensors.safetensors"   # the anchors' reference log-probs, torch's RNG state
BEST = "best_dev.parquet"


def input_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """A hash of every file's name and bytes under ``folder`` (a model: the weights are read
    once more, about what loading them costs)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class CycleState:
    """Where the cycles stood after the last finished ``cycle``."""

    cycle: int
    records: list[dict]
    best: pd.DataFrame               # dev evidence of the best policy so far
    anchors: AnchorSet | None
    history: list[dict]              # relearn loss per step, every cycle so far
    rng: dict


def rng_state() -> dict:
    """Python's, NumPy's and torch's CPU generators, as JSON and a tensor (no pickles)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


class WorkFolder:
    def __init__(self, root: Path, inputs: dict):
        self.path = Path(root) / input_key(inputs)

    def relearn_checkpoints(self, cycle: int) -> Path:
        return self.path / f"relearn-{cycle}"

    def _cycle_dir(self, cycle: int) -> Path:
        return self.path / f"cycle-{cycle}"

    def save(self, policy: torch.nn.Module, state: CycleState) -> None:
        """The state after ``state.cycle``; then the previous cycle's and this cycle's checkpoints go.
        Process 0 writes for all (``distributed.py``)."""
        if not is_writer():
            return
        with replaced_folder(self._cycle_dir(state.cycle)) as staging:
            save_model(policy, str(staging / POLICY))
            tensors = {"torch_rng": state.rng["torch"]}
            if state.anchors is not None:
                tensors["anchor_ref_logps"] = state.anchors.ref_logps.contiguous()
            save_file(tensors, str(staging / TENSORS))
            state.best.to_parquet(staging / BEST, index=False)
            meta = {"cycle": state.cycle, "records": state.records, "history": state.history,
                    "rng": {k: v for k, v in state.rng.items() if k != "torch"},
                    "anchor_responses": state.anchors.responses if state.anchors is not None else None}
            (staging / STATE).write_text(json.dumps(meta))
        for stale in (self._cycle_dir(state.cycle - 1), self.relearn_checkpoints(state.cycle)):
            shutil.rmtree(stale, ignore_errors=True)

    def load(self, policy: torch.nn.Module) -> CycleState | None:
        """The newest finished cycle's state, its weights loaded into ``policy``; None to start afresh."""
        finished = sorted(self.path.glob("cycle-*"), key=lambda d: int(d.name.split("-")[1]))
        if not finished:
            return None
        folder = finished[-1]
        meta = json.loads((folder / STATE).read_text())
        tensors = load_file(str(folder / TENSORS))
        load_model(policy, str(folder / POLICY))
        anchors = None
        if meta["anchor_responses"] is not None:
            anchors = AnchorSet(meta["anchor_responses"], tensors["anchor_ref_logps"])
        return CycleState(meta["cycle"], meta["records"], pd.read_parquet(folder / BEST), anchors, meta["history"],
                          {**meta["rng"], "torch": tensors["torch_rng"]})

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
