"""Anchor responses for D2O: K samples per training prompt with their reference log-probs.

Offline mode samples once from the frozen reference; online mode samples from the current
policy each cycle. Either way the log-probs are the *reference's*, computed once here and
cached, so relearning never runs the reference model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.distributed import gather, share
from components.modeling.chat import end_of_turn_id
from components.modeling.sequences import BATCH_SEED_STRIDE, Encoded, sample_responses, score
from components.params import AnchorParams


@dataclass
class AnchorSet:
    responses: list[list[list[int]]]   # [prompt][k] -> token ids
    ref_logps: torch.Tensor            # [n_prompts, k]


def sample_anchors(sampler, reference, tokenizer, prompt_ids: list[list[int]], params: AnchorParams,
                   seed: int) -> AnchorSet:
    """Each batch of ``params.batch_size`` prompts samples from its own seed (``seed`` and the
    batch's place), so the anchors do not depend on how the batches are shared among processes:
    each samples and scores its share (``distributed.py``), and every one gets them all."""
    starts = range(0, len(prompt_ids), params.batch_size)
    batches = gather([_sample_batch(sampler, reference, tokenizer, prompt_ids[start : start + params.batch_size],
                                    params, seed + BATCH_SEED_STRIDE * (start // params.batch_size))
                      for start in share(list(starts))])
    return AnchorSet([group for responses, _ in batches for group in responses],
                     torch.cat([ref_logps for _, ref_logps in batches]))


def _sample_batch(sampler, reference, tokenizer, prompt_ids: list[list[int]], params: AnchorParams,
                  seed: int) -> tuple[list[list[list[int]]], torch.Tensor]:
    torch.manual_seed(seed)
    responses = sample_responses(
        sampler, prompt_ids, params.k, params.max_new_tokens,
        eos_id=end_of_turn_id(tokenizer), pad_id=tokenizer.pad_token_id,
        temperature=params.temperature, top_p=params.top_p, batch_size=len(prompt_ids),
    )
    flat = [Encoded(prompt, response) for prompt, group in zip(prompt_ids, responses) for response in group]
    ref_sums, _ = score(reference, flat, tokenizer.pad_token_id)
    return responses, ref_sums.view(len(prompt_ids), params.k)
