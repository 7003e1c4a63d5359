"""Forgetting operations of forget-and-relearn (Zhou et al., ICLR 2022), for causal LMs.

They act on the top ``blocks`` transformer blocks only; embeddings (often tied to the
output layer), the LM head and the final norm are never touched, so the vocabulary
survives forgetting. Ops (METHODS.md §3), set by ``cycles.forget``:

- ``none``;
- ``reset_top``: re-initialise the blocks with the model's own initialiser (later-layer forgetting);
- ``partial_reset``: re-initialise all but a random ``keep`` fraction of each tensor's entries;
- ``shrink_perturb``: θ ← shrink·θ + noise·ε, ε ~ N(0, 1) (Ash & Adams 2020);
- ``magnitude_zero``: zero all but the ``keep`` fraction of largest-magnitude entries of each
  weight matrix (biases and norms, 1-D, are left alone).

All randomness comes from ``seed`` on a forked RNG: the same seed forgets the same way, and
the caller's random stream is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from components.modeling.models import decoder_blocks
from components.params import ForgetParams


def _reset(model, blocks: list[nn.Module], params: ForgetParams) -> None:
    """Later-layer forgetting: the blocks start over from the model's own initialiser."""
    for block in blocks:
        for parameter in block.parameters():
            # from_pretrained flags loaded tensors as initialised, and transformers' init functions
            # skip flagged tensors: without this, forgetting a loaded model silently does nothing
            parameter._is_hf_initialized = False
        for module in block.modules():
            model._init_weights(module)


def _partial_reset(model, blocks: list[nn.Module], params: ForgetParams) -> None:
    """Draw fresh init values for every entry, then put back a Bernoulli(keep) subset of the old ones."""
    parameters = [p for block in blocks for p in block.parameters()]
    old = [p.detach().clone() for p in parameters]
    _reset(model, blocks, params)
    for parameter, previous in zip(parameters, old):
        kept = torch.rand(parameter.shape, device=parameter.device) < params.keep
        parameter.copy_(torch.where(kept, previous, parameter))


def _shrink_perturb(model, blocks: list[nn.Module], params: ForgetParams) -> None:
    """Shrinking keeps what was learnt (scaled down) while noise restores plasticity."""
    for parameter in (p for block in blocks for p in block.parameters()):
        parameter.mul_(params.shrink).add_(torch.randn_like(parameter), alpha=params.noise)


def _magnitude_zero(model, blocks: list[nn.Module], params: ForgetParams) -> None:
    """Keep exactly round(keep·n) entries of each weight matrix, the largest in magnitude."""
    for parameter in (p for block in blocks for p in block.parameters() if p.dim() == 2):
        magnitudes = parameter.abs().flatten()
        kept = torch.zeros_like(magnitudes, dtype=torch.bool)
        kept[magnitudes.topk(round(params.keep * magnitudes.numel())).indices] = True
        parameter.masked_fill_(~kept.view(parameter.shape), 0)


OPS: dict[str, Callable[..., None] | None] = {
    "none": None,
    "reset_top": _reset,
    "partial_reset": _partial_reset,
    "shrink_perturb": _shrink_perturb,
    "magnitude_zero": _magnitude_zero,
}
FORGET_OPS = tuple(OPS)


def check_forget(params: ForgetParams, n_blocks: int) -> None:
    """What params.yaml cannot know: the model's depth. Callers check before training, not only
    when forgetting; every other rule was checked when params.yaml was read."""
    if params.blocks > n_blocks:
        raise ValueError(f"cycles.forget.blocks: {params.blocks} is outside [0, {n_blocks}] (the model's blocks)")


@torch.no_grad()
def forget(model, params: ForgetParams, seed: int) -> None:
    """Apply ``params.op`` to the top ``params.blocks`` blocks of ``model``, in place."""
    stack = decoder_blocks(model)
    check_forget(params, len(stack))
    op = OPS[params.op]
    if op is None or params.blocks == 0:
        return
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        op(model, list(stack[len(stack) - params.blocks :]), params)
