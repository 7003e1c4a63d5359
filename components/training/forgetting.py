"""Forgetting operations of forget-and-relearn (Zhou et al., ICLR 2022), for causal LMs.

They act on the top ``blocks`` transformer blocks only; embeddings (often tied to the
output layer) and the LM head are never touched, so the vocabulary survives forgetting.
"""

from __future__ import annotations

import torch

from components.modeling.models import decoder_blocks

FORGET_OPS = ("none", "reset_top")


def forget(model, op: str, blocks: int, seed: int) -> None:
    """Apply forgetting operation ``op`` to ``model`` in place."""
    if op not in FORGET_OPS:
        raise ValueError(f"cycles.forget.op: {op!r} is not one of {FORGET_OPS}")
    if op == "none" or blocks <= 0:
        return
    stack = decoder_blocks(model)
    if blocks > len(stack):
        raise ValueError(f"cycles.forget.blocks: {blocks} exceeds the model's {len(stack)} blocks")
    torch.manual_seed(seed)
    for block in stack[len(stack) - blocks :]:
        for parameter in block.parameters():
            # from_pretrained flags loaded tensors as initialised, and transformers' init functions
            # skip flagged tensors: without this, forgetting a loaded model silently does nothing
            parameter._is_hf_initialized = False
        for module in block.modules():
            model._init_weights(module)
