"""Relearn checkpoints that a rerun after a kill resumes from.

``transformers.Trainer`` writes them every ``cycles.checkpoint_steps`` steps into the cycles
stage's work folder (``resume.py``): the weights as safetensors, and the optimizer, scheduler
and RNG states as torch files. Those are pickles, but ones the Trainer wrote itself into our
own folder, and transformers 5 reads them back with ``torch.load(weights_only=True)``, which
unpickles tensors and plain containers only (its ``training_args.bin`` is written but never
read back). The Trainer writes a checkpoint file by file, so
a kill can leave a partial one: each process marks a checkpoint once its part is written
(``progress-<rank>.json``, with its running loss sum, which the Trainer does not carry across
a resume), and only a checkpoint that every process marked is resumed from.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from components.atomic import write_text


def _progress_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"progress-{rank}.json"


def latest_checkpoint(folder: Path, world_size: int = 1) -> Path | None:
    """The newest checkpoint in ``folder`` that every one of ``world_size`` processes finished."""
    found = [c for c in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if all(_progress_file(c, rank).is_file() for rank in range(world_size))]
    return max(found, key=lambda c: int(c.name.rsplit("-", 1)[1]), default=None)


class MarkCheckpoints(TrainerCallback):
    """After the Trainer saved a checkpoint, this process's mark with ``loss_sum()`` so far."""

    def __init__(self, loss_sum):
        self.loss_sum = loss_sum

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        write_text(_progress_file(checkpoint, args.process_index), json.dumps({"loss_sum": self.loss_sum()}))


def saved_loss_sum(checkpoint: Path, rank: int) -> float:
    return json.loads(_progress_file(checkpoint, rank).read_text())["loss_sum"]
