"""Training progress as it happens: loss and learning rate per logging step.

One ``TrainerCallback`` replaces the library's printer: a bar on a terminal, about ten plain
lines in a log, MLflow metric history (``<name>.loss``, ``<name>.learning_rate``) in the
stage's run while it trains, and the history itself for the stage's plot files.
"""

from __future__ import annotations

import math

from tqdm.auto import tqdm
from transformers import PrinterCallback, Trainer, TrainerCallback

from components.progress import interactive
from components.registry.tracking import log_live


class StepLog(TrainerCallback):
    """``history`` holds ``{"step", "loss", "learning_rate"}`` rows; ``step_offset`` puts
    several trainings (one per cycle) on one axis."""

    def __init__(self, name: str, step_offset: int = 0):
        self.name = name
        self.step_offset = step_offset
        self.history: list[dict[str, float]] = []
        self._bar = None
        self._printed_tenths = 0

    def on_train_begin(self, args, state, control, **kwargs):
        # a training resumed from a checkpoint: its steps so far come from the checkpoint's log
        self.history += [self._row(logs["step"], logs) for logs in state.log_history if "loss" in logs]
        self._bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.name,
                         disable=not interactive(), leave=False)
        self._printed_tenths = 10 * state.global_step // max(state.max_steps, 1)

    def _row(self, step: int, logs: dict) -> dict[str, float]:
        return {"step": self.step_offset + step, "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", math.nan))}

    def on_step_end(self, args, state, control, **kwargs):
        self._bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        row = self._row(state.global_step, logs)
        self.history.append(row)
        loss, rate = row["loss"], row["learning_rate"]
        log_live({f"{self.name}.loss": loss, f"{self.name}.learning_rate": rate}, row["step"])
        tenths = 10 * state.global_step // max(state.max_steps, 1)
        if interactive():
            self._bar.set_postfix(loss=f"{loss:.4f}")
        elif tenths > self._printed_tenths:
            self._printed_tenths = tenths
            print(f"{self.name}: step {state.global_step}/{state.max_steps} loss {loss:.4f} lr {rate:.2e}", flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._bar.close()


def quiet_printer(trainer: Trainer) -> Trainer:
    """Drop the library's printer, which prints every log dict; :class:`StepLog` reports instead."""
    trainer.remove_callback(PrinterCallback)
    return trainer
