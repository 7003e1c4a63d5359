"""Alignment objectives as pure functions of summed response log-probs.

Every function returns the per-example loss, shape ``[B]``; the batch loss is
:func:`weighted_mean` of it (each example's loss times its weight, e.g. its item's agreement).
Inputs are ``log π(y|x)`` summed over response tokens (see ``components.modeling.sequences``).
Reference log-probs are treated as constants: they are detached here, so no gradient can
reach a reference model even if a caller forgets ``torch.no_grad``. Formulas: METHODS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d2o_loss(
    policy_anchor_logps: torch.Tensor,
    ref_anchor_logps: torch.Tensor,
    policy_neg_logps: torch.Tensor,
    ref_neg_logps: torch.Tensor,
    alpha: float,
    beta: float,
    anchor_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distributional Dispreference Optimization (Duan et al. 2024).

    ``−log σ((β/K)·Σ_k r(y_k) − α·r(y_l))`` with anchors ``[B, K]`` and negatives ``[B]``.
    The anchor average sits inside σ. ``anchor_mask`` (bool ``[B, K]``) drops anchors; K is
    then the number kept, and a row with none kept keeps only its negative term.
    """
    anchor_rewards = policy_anchor_logps - ref_anchor_logps.detach()
    if anchor_mask is None:
        anchor_mean = anchor_rewards.mean(dim=-1)
    else:
        kept = anchor_mask.to(anchor_rewards.dtype)
        anchor_mean = (anchor_rewards * kept).sum(dim=-1) / kept.sum(dim=-1).clamp(min=1.0)
    negative_reward = policy_neg_logps - ref_neg_logps.detach()
    return -F.logsigmoid(beta * anchor_mean - alpha * negative_reward)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO, sigmoid form: ``−log σ(β·[r(y_w) − r(y_l)])``. Needs pairs."""
    chosen = policy_chosen_logps - ref_chosen_logps.detach()
    rejected = policy_rejected_logps - ref_rejected_logps.detach()
    return -F.logsigmoid(beta * (chosen - rejected))


def npo_loss(policy_neg_logps: torch.Tensor, ref_neg_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization: ``−(2/β)·log σ(−β·r(y_l))``; tends to GA as β → 0."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (policy_neg_logps - ref_neg_logps.detach()))


def kto_undesirable_loss(
    policy_neg_logps: torch.Tensor, ref_neg_logps: torch.Tensor, beta: float, z0: torch.Tensor
) -> torch.Tensor:
    """KTO with undesirable examples only (λ_U = 1): ``1 − σ(β·(z0 − r(y_l)))``.

    ``z0`` is the trainer's detached, non-negative estimate of KL(π_θ‖π_ref).
    """
    reward = policy_neg_logps - ref_neg_logps.detach()
    return 1.0 - torch.sigmoid(beta * (z0.detach() - reward))


def ga_loss(policy_neg_logps: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on negatives: minimise ``log π(y_l|x)``. Unbounded; the negative control."""
    return policy_neg_logps


def stable_alignment_loss(
    nll: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor, ratio: float, margin: float, scale: float
) -> torch.Tensor:
    """Stable Alignment (Liu et al. 2024) over rated groups ``[B, G]``:
    ``ℓ_best + λ·max(0, mean_{i≠best}[ℓ_best − ℓ_i + M·(s_best − s_i)/S])``.

    ``nll`` is each response's token-mean NLL (prompt masked), ``ratings`` its score on 1..S,
    ``mask`` the members present (groups are padded). Each member's margin uses *its own*
    rating: the official code indexes the sorted ratings with unsorted positions, so margins
    land on the wrong responses. Ties for best go to the first; a group of one is plain SFT.
    No reference model.
    """
    best = ratings.masked_fill(~mask, float("-inf")).argmax(dim=-1, keepdim=True)
    nll_best, rating_best = nll.gather(-1, best), ratings.gather(-1, best)
    terms = nll_best - nll + margin * (rating_best - ratings) / scale
    others = mask.scatter(-1, best, False)
    mean = (terms * others).sum(-1) / others.sum(-1).clamp(min=1)
    return nll_best.squeeze(-1) + ratio * mean.clamp(min=0)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The batch loss: ``mean(w_i · loss_i)``, so an example's weight scales its gradient and
    weights of one (or none) give the plain mean. Shared by every objective."""
    if weights is None:
        return losses.mean()
    return (losses * weights.to(losses.dtype)).mean()
