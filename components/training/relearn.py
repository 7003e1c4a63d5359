"""The relearn step: train the policy on negatives with a negatives-only objective.

Built on ``transformers.Trainer`` (checkpointing, accumulation, mixed precision and
multi-GPU launch come from the library); alignpipe supplies the dataset, the collator and
the loss. One batch holds B negatives and, for D2O, their B×K anchors in a single padded
forward pass; reference log-probs arrive precomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Trainer

from components.modeling.sequences import Encoded, SequenceBatch, collate, sequence_logps
from components.params import RelearnParams
from components.training.losses import d2o_loss, ga_loss, npo_loss
from components.training.trainer_args import training_arguments

NEGATIVES_ONLY_OBJECTIVES = ("d2o", "npo", "ga")


@dataclass(frozen=True)
class RelearnExample:
    negative: Encoded
    ref_neg_logp: float
    anchors: tuple[Encoded, ...] = ()
    ref_anchor_logps: tuple[float, ...] = ()


class RelearnCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[RelearnExample]) -> dict[str, torch.Tensor]:
        sequences = [e.negative for e in examples] + [a for e in examples for a in e.anchors]
        batch = collate(sequences, self.pad_id)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "response_mask": batch.response_mask,
            "ref_neg_logps": torch.tensor([e.ref_neg_logp for e in examples]),
            "ref_anchor_logps": torch.tensor([e.ref_anchor_logps for e in examples]).view(len(examples), -1),
        }


class RelearnTrainer(Trainer):
    """A ``Trainer`` whose loss is one of alignpipe's objectives over summed log-probs."""

    def __init__(self, *args, relearn: RelearnParams, **kwargs):
        super().__init__(*args, **kwargs)
        self.relearn = relearn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = SequenceBatch(inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"])
        logps, _ = sequence_logps(model, batch)
        n_neg = inputs["ref_neg_logps"].shape[0]
        policy_neg, policy_anchors = logps[:n_neg], logps[n_neg:].view(n_neg, -1)
        losses = objective_losses(self.relearn, policy_neg, inputs["ref_neg_logps"],
                                  policy_anchors, inputs["ref_anchor_logps"])
        loss = losses.mean()
        return (loss, {"logps": logps}) if return_outputs else loss


def objective_losses(relearn: RelearnParams, policy_neg, ref_neg, policy_anchors, ref_anchors) -> torch.Tensor:
    if relearn.objective == "d2o":
        return d2o_loss(policy_anchors, ref_anchors, policy_neg, ref_neg, relearn.alpha, relearn.beta)
    if relearn.objective == "npo":
        return npo_loss(policy_neg, ref_neg, relearn.beta)
    if relearn.objective == "ga":
        return ga_loss(policy_neg)
    raise ValueError(f"cycles.relearn.objective: {relearn.objective!r} is not one of {NEGATIVES_ONLY_OBJECTIVES}")


def relearn(policy, tokenizer, examples: list[RelearnExample], params: RelearnParams, seed: int) -> dict[str, float]:
    """Train ``policy`` in place; returns the mean training loss."""
    if params.objective not in NEGATIVES_ONLY_OBJECTIVES:
        raise ValueError(f"cycles.relearn.objective: {params.objective!r} is not one of {NEGATIVES_ONLY_OBJECTIVES}")
    args = training_arguments(params.steps, params.batch_size, params.learning_rate, seed)
    trainer = RelearnTrainer(model=policy, args=args, train_dataset=examples,
                             data_collator=RelearnCollator(tokenizer.pad_token_id), relearn=params)
    result = trainer.train()
    policy.eval()
    return {"relearn_train_loss": float(result.training_loss)}
