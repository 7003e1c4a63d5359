"""One place that turns alignpipe's step-based settings into ``TrainingArguments``.

The library (transformers/accelerate) then owns devices, mixed precision, gradient
accumulation and multi-GPU launch; alignpipe saves models itself with ``save_pretrained``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import TrainingArguments


def training_arguments(steps: int, batch_size: int, learning_rate: float, seed: int, warmup_steps: int = 0,
                       dtype: str = "float32", checkpoints: Path | None = None,
                       checkpoint_steps: int = 0) -> TrainingArguments:
    """``checkpoint_steps`` > 0 saves a resumable checkpoint (``checkpoints.py``) that often
    into ``checkpoints``, keeping the newest two: a kill while one is written leaves the other."""
    return TrainingArguments(
        # without checkpoints nothing is saved here: one shared folder, not a new one per call
        output_dir=str(checkpoints or Path(tempfile.gettempdir()) / "alignpipe-trainer"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=max(1, steps // 100),   # a loss curve, not eight points
        disable_tqdm=True,                     # StepLog draws the bar (components/training/step_log.py)
        save_strategy="steps" if checkpoint_steps else "no",
        save_steps=checkpoint_steps or 500,   # 500: the library's default, unused without checkpoints
        save_total_limit=2,
        report_to="none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),   # on CPU, launched processes train as DDP (gloo)
        bf16=dtype == "bfloat16" and torch.cuda.is_available(),
    )
