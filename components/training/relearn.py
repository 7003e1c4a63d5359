"""The relearn step: train the policy on negatives with one of alignpipe's objectives.

Built on ``transformers.Trainer`` (checkpointing, accumulation, mixed precision and
multi-GPU launch come from the library); alignpipe supplies the dataset, the collator and
the loss. Each negative travels with its *companions*, scored in the same padded forward
pass, with reference log-probs precomputed so the reference never runs during training:

- ``d2o``: K sampled anchors (an optional mask drops some);
- ``dpo``: the paired chosen response (K = 1);
- ``kto``: a mismatched (prompt, response) pair, for the KL estimate z0 (K = 1);
- ``stable_alignment``: the other rated responses to the same prompt (``ratings`` beside), no
  reference at all;
- ``npo``, ``ga``: none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from transformers import Trainer

from components.modeling.sequences import Encoded, SequenceBatch, collate, sequence_logps
from components.distributed import mean_over_processes, world
from components.params import ParamsError, RelearnParams
from components.training.checkpoints import MarkCheckpoints, latest_checkpoint, saved_loss_sum
from components.training.losses import (d2o_loss, dpo_loss, ga_loss, kto_undesirable_loss, npo_loss,
                                        stable_alignment_loss, weighted_mean)
from components.training.step_log import quiet_printer
from components.training.trainer_args import training_arguments

@dataclass(frozen=True)
class RelearnExample:
    negative: Encoded
    ref_neg_logp: float
    companions: tuple[Encoded, ...] = ()
    ref_companion_logps: tuple[float, ...] = ()
    companion_mask: tuple[bool, ...] | None = None   # d2o: False drops an anchor; groups: padding
    weight: float = 1.0                               # the loss multiplier (cycles.relearn.weighting)
    ratings: tuple[float, ...] = ()                   # stable_alignment: the negative's, then each companion's


class RelearnCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[RelearnExample]) -> dict[str, torch.Tensor]:
        sequences = [e.negative for e in examples] + [c for e in examples for c in e.companions]
        batch = collate(sequences, self.pad_id)
        n = len(examples)
        masks = [e.companion_mask or (True,) * len(e.companions) for e in examples]
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "response_mask": batch.response_mask,
            "ref_neg_logps": torch.tensor([e.ref_neg_logp for e in examples]),
            "ref_companion_logps": torch.tensor([e.ref_companion_logps for e in examples]).view(n, -1),
            "companion_mask": torch.tensor(masks, dtype=torch.bool).view(n, -1),
            "weights": torch.tensor([e.weight for e in examples], dtype=torch.float32),
            "ratings": torch.tensor([e.ratings for e in examples], dtype=torch.float32).view(n, -1),
        }


def example_weights(negatives: pd.DataFrame, weighting: str) -> list[float]:
    """Each training negative's loss weight: 1, or its item's ``agreement`` (the share of its
    judgements that called it negative), so contested negatives pull less."""
    if weighting == "none":
        return [1.0] * len(negatives)
    return [float(w) for w in negatives["agreement"]]


def with_weights(examples: list[RelearnExample], weights: list[float]) -> list[RelearnExample]:
    return [replace(example, weight=weight) for example, weight in zip(examples, weights, strict=True)]


def objective_losses(relearn: RelearnParams, policy_neg, ref_neg, policy_comp, ref_comp, comp_mask=None) -> torch.Tensor:
    """Per-example loss of ``relearn.objective`` from summed log-probs (``[B]`` and ``[B, K]``)."""
    if relearn.objective == "d2o":
        return d2o_loss(policy_comp, ref_comp, policy_neg, ref_neg, relearn.alpha, relearn.beta, comp_mask)
    if relearn.objective == "dpo":
        return dpo_loss(policy_comp[:, 0], ref_comp[:, 0], policy_neg, ref_neg, relearn.beta)
    if relearn.objective == "kto":
        z0 = (policy_comp[:, 0] - ref_comp[:, 0]).mean().clamp(min=0).detach()
        return kto_undesirable_loss(policy_neg, ref_neg, relearn.beta, z0)
    if relearn.objective == "npo":
        return npo_loss(policy_neg, ref_neg, relearn.beta)
    return ga_loss(policy_neg)


def group_losses(relearn: RelearnParams, logps, counts, n_groups: int, ratings, companion_mask) -> torch.Tensor:
    """Stable Alignment's loss per rated group: each negative (first) with its companions,
    on token-mean NLL, so long and short answers weigh alike."""
    nll = -logps / counts.clamp(min=1)
    group_nll = torch.cat([nll[:n_groups, None], nll[n_groups:].view(n_groups, -1)], dim=1)
    mask = torch.cat([torch.ones(n_groups, 1, dtype=torch.bool, device=nll.device), companion_mask.to(nll.device)], 1)
    sa = relearn.stable_alignment
    return stable_alignment_loss(group_nll, ratings.to(nll.device), mask, sa.ratio, sa.margin, sa.scale)


class RelearnTrainer(Trainer):
    """A ``Trainer`` whose loss is one of alignpipe's objectives over summed log-probs.
    ``loss_sum`` adds up every step's loss, carried across a resume (``checkpoints.py``)."""

    def __init__(self, *args, relearn: RelearnParams, **kwargs):
        super().__init__(*args, **kwargs)
        self.relearn = relearn
        self.loss_sum = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = SequenceBatch(inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"])
        logps, counts = sequence_logps(model, batch)
        n_neg = inputs["ref_neg_logps"].shape[0]
        if self.relearn.objective == "stable_alignment":
            losses = group_losses(self.relearn, logps, counts, n_neg, inputs["ratings"], inputs["companion_mask"])
        else:
            policy_neg, policy_comp = logps[:n_neg], logps[n_neg:].view(n_neg, -1)
            losses = objective_losses(self.relearn, policy_neg, inputs["ref_neg_logps"], policy_comp,
                                      inputs["ref_companion_logps"], inputs["companion_mask"])
        loss = weighted_mean(losses, inputs["weights"])
        if model.training:
            self.loss_sum += loss.item()
        return (loss, {"logps": logps}) if return_outputs else loss


def relearn(policy, tokenizer, examples: list[RelearnExample], params: RelearnParams, seed: int,
            callbacks: list | None = None, checkpoints: Path | None = None,
            checkpoint_steps: int = 0) -> dict[str, float]:
    """Train ``policy`` in place; returns the mean training loss. ``callbacks`` are
    ``transformers.TrainerCallback`` objects (benchmarks measure along the way with them).
    With ``checkpoint_steps``, a checkpoint that often in ``checkpoints``, and training
    resumes from the newest finished one there."""
    _, processes = world()
    if params.batch_size % processes:
        raise ParamsError(f"relearn.batch_size = {params.batch_size} does not split among compute.processes = "
                          f"{processes}: each process takes an equal share of every step's batch")
    args = training_arguments(params.steps, params.batch_size // processes, params.learning_rate, seed,
                              checkpoints=checkpoints, checkpoint_steps=checkpoint_steps)
    trainer = quiet_printer(RelearnTrainer(model=policy, args=args, train_dataset=examples, callbacks=callbacks,
                                           data_collator=RelearnCollator(tokenizer.pad_token_id), relearn=params))
    resume = latest_checkpoint(checkpoints, args.world_size) if checkpoint_steps else None
    if checkpoint_steps:
        trainer.add_callback(MarkCheckpoints(lambda: trainer.loss_sum))
    if resume:
        trainer.loss_sum = saved_loss_sum(resume, args.process_index)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    policy.eval()
    return {"relearn_train_loss": mean_over_processes(trainer.loss_sum) / params.steps}
