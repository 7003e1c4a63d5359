"""Build, load and save causal language models: the tiny default or any local HF model.

Models are always saved as safetensors with ``save_pretrained`` and loaded without remote
code or pickled weights unless the user opts in (``reference.trust_remote_code``,
``reference.allow_pickle``; ``model_folder.py`` refuses the rest before loading).
"""

from __future__ import annotations

import typing
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from components.errors import UserError
from components.modeling.model_folder import check_model_folder
from components.params import Dtype

DTYPES = {name: getattr(torch, name) for name in typing.get_args(Dtype)}


def build_tiny_model(tokenizer, n_layer: int, n_embd: int, n_head: int, n_positions: int) -> GPT2LMHeadModel:
    """A GPT-2-shaped model from a config (no download). Dropout is off: D2O compares
    policy and reference log-probs of the same text, and dropout noise would bias them."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def load_model(name_or_path: str | Path, trust_remote_code: bool = False, dtype: Dtype = "float32",
               allow_pickle: bool = False) -> PreTrainedModel:
    check_model_folder(name_or_path, trust_remote_code, allow_pickle)
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), trust_remote_code=trust_remote_code, dtype=DTYPES[dtype],
        use_safetensors=None if allow_pickle else True,
    )
    disable_dropout(model)
    # policy and reference must share a device: the Trainer moves the policy to a GPU if there is one
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False):
    """A tokenizer with a pad token (the end-of-sequence token where the model has none)."""
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{name_or_path}: tokenizer has no end-of-sequence token; responses need one to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_model(model: PreTrainedModel, tokenizer, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


class ContextLengthError(UserError, ValueError):
    """Settings ask for sequences longer than the model has positions for."""


def check_context(model: PreTrainedModel, prompt_tokens: int, new_tokens: int, setting: str) -> None:
    """Fail before any work when a prompt plus ``new_tokens`` would run past the model's position
    table: generation would otherwise crash deep inside ``generate`` with a bare IndexError.
    The tiny default has exactly ``max_prompt_tokens + max_response_tokens`` positions."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and prompt_tokens + new_tokens > limit:
        raise ContextLengthError(
            f"{setting} = {new_tokens}: with sequence.max_prompt_tokens = {prompt_tokens} that needs "
            f"{prompt_tokens + new_tokens} positions, but the model has {limit} (the tiny default has "
            "max_prompt_tokens + max_response_tokens); lower it or raise sequence.max_response_tokens")


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The stack of transformer blocks, whatever the architecture calls it.

    It is the ModuleList whose length is the configured number of layers (``h`` in GPT-2,
    ``layers`` in Llama and Qwen2); embeddings and the LM head are never part of it.
    """
    n_layers = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"{type(model).__name__}: no ModuleList of {n_layers} decoder blocks found")
