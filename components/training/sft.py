"""Supervised fine-tuning of the tiny reference model on the ingested dialogues.

The reference is the model every later log-prob is compared against, so it learns the
data as it is (negatives included, as a base model trained on web text would have).
"""

from __future__ import annotations

import torch
from transformers import Trainer

from components.modeling.sequences import Encoded, collate
from components.training.step_log import StepLog, quiet_printer
from components.training.trainer_args import training_arguments


class _DialogueCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, sequences: list[Encoded]) -> dict[str, torch.Tensor]:
        batch = collate(sequences, self.pad_id)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": labels}


def supervised_finetune(model, tokenizer, sequences: list[Encoded], steps: int, batch_size: int,
                        learning_rate: float, warmup_steps: int, seed: int) -> tuple[dict[str, float], StepLog]:
    """Train ``model`` in place on whole dialogues; returns the mean training loss and the
    per-step log (``sft.loss``, ``sft.learning_rate``)."""
    args = training_arguments(steps, batch_size, learning_rate, seed, warmup_steps)
    step_log = StepLog("sft")
    trainer = quiet_printer(Trainer(model=model, args=args, train_dataset=sequences, callbacks=[step_log],
                                    data_collator=_DialogueCollator(tokenizer.pad_token_id)))
    result = trainer.train()
    model.eval()
    return {"sft_train_loss": float(result.training_loss)}, step_log
