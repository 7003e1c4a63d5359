"""Prompt/response token sequences and their summed response log-probabilities.

Every objective and metric works on ``log π(y|x)`` summed over the response tokens only,
so this is the one place that decides how a (prompt, response) becomes tokens: prompts
keep their *last* tokens (the latest turns), responses their first, and a response ends in
the end-of-turn token only when it was not cut short. A tokenizer with a chat template gets
prompts as its template renders them and answers as the assistant's message (``chat.py``);
one without gets the HH transcript as it is, and ``" " + response``, the shape the tiny
default learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from components.modeling.chat import Chat, end_of_turn_id, render_hh, templated_prompt_ids, transcript_messages
from components.progress import progress

BATCH_SEED_STRIDE = 1_000_003   # seeded sampling: batch b draws from seed + b * this, apart from other seeds


@dataclass(frozen=True)
class Encoded:
    prompt_ids: list[int]
    response_ids: list[int]


@dataclass
class SequenceBatch:
    """Right-padded ``[N, T]`` tensors; ``response_mask`` marks tokens whose log-prob counts."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor

    def to(self, device) -> "SequenceBatch":
        """The batch on ``device`` (the model's: the Trainer may have moved it to a GPU)."""
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def encode_prompt(tokenizer, prompt: str | Chat, max_prompt_tokens: int) -> list[int]:
    """A transcript (a record's prompt) or a chat (the sandbox's messages), ready for the answer."""
    if tokenizer.chat_template:
        messages = transcript_messages(prompt) if isinstance(prompt, str) else prompt
        return templated_prompt_ids(tokenizer, messages, max_prompt_tokens)
    text = prompt if isinstance(prompt, str) else render_hh(prompt)
    return tokenizer(text, add_special_tokens=True)["input_ids"][-max_prompt_tokens:]


def encode_response(tokenizer, response: str, max_response_tokens: int) -> list[int]:
    text = response.strip() if tokenizer.chat_template else " " + response.strip()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < max_response_tokens:
        return ids + [end_of_turn_id(tokenizer)]
    return ids[:max_response_tokens]


def encode(tokenizer, prompt: str, response: str, max_prompt_tokens: int, max_response_tokens: int) -> Encoded:
    return Encoded(
        encode_prompt(tokenizer, prompt, max_prompt_tokens),
        encode_response(tokenizer, response, max_response_tokens),
    )


def collate(sequences: list[Encoded], pad_id: int) -> SequenceBatch:
    length = max(len(s.prompt_ids) + len(s.response_ids) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    response_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        n_prompt, n_total = len(seq.prompt_ids), len(seq.prompt_ids) + len(seq.response_ids)
        input_ids[row, :n_total] = torch.tensor(seq.prompt_ids + seq.response_ids)
        attention_mask[row, :n_total] = 1
        response_mask[row, n_prompt:n_total] = True
    return SequenceBatch(input_ids, attention_mask, response_mask)


def token_logps(model, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each next token ``[N, T-1]`` and the matching response mask."""
    batch = batch.to(model.device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    targets = batch.input_ids[:, 1:]
    logps = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return logps, batch.response_mask[:, 1:]


def sequence_logps(model, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ response-token log-probs [N], number of response tokens [N])``."""
    logps, mask = token_logps(model, batch)
    return (logps * mask).sum(-1), mask.sum(-1)


@torch.inference_mode()
def score(model, sequences: list[Encoded], pad_id: int, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of many sequences, without gradients (for references and metrics)."""
    sums, counts = [], []
    for start in progress(range(0, len(sequences), batch_size), "scoring", -(-len(sequences) // batch_size)):
        total, n = sequence_logps(model, collate(sequences[start : start + batch_size], pad_id))
        sums.append(total.cpu())
        counts.append(n.cpu())
    if not sums:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(sums), torch.cat(counts)


@torch.inference_mode()
def sample_responses(
    model,
    prompts: list[list[int]],
    k: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int | None = None,
) -> list[list[list[int]]]:
    """``k`` sampled responses per prompt, as token ids cut after the first ``eos_id`` (the
    end-of-turn token, ``chat.end_of_turn_id``, that :func:`encode_response` ends answers with).
    ``temperature`` 0 decodes greedily (then every one of the ``k`` is the same answer).

    Batched, left-padded generation with the KV cache; ``batch_size`` counts prompts. With
    ``seed``, batch b samples under ``seed + b * BATCH_SEED_STRIDE``: two models sampled with
    one seed then draw the same random numbers for the same prompt, whatever lengths earlier
    batches ran to (common random numbers; without it the batches share one random stream).
    """
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else \
        {"do_sample": False}
    results: list[list[list[int]]] = []
    for start in progress(range(0, len(prompts), batch_size), "sampling", -(-len(prompts) // batch_size)):
        if seed is not None:
            torch.manual_seed(seed + BATCH_SEED_STRIDE * (start // batch_size))
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(chunk):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        generated = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            **sampling,
            max_new_tokens=max_new_tokens,
            num_return_sequences=k,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
        )[:, width:]
        for row in range(len(chunk)):
            results.append([_cut_after_eos(generated[row * k + j].tolist(), eos_id) for j in range(k)])
    return results


def _cut_after_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids
