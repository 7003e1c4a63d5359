"""Model backends behind one interface: write answers to chats, rate from the digit distribution.

- :class:`HFBackend`: a Hugging Face causal LM from a local folder or an MLflow model URI
  (``models:/alignpipe-policy@champion``). Chats are encoded like every prompt of the pipeline
  (``sequences.encode_prompt``): with the tokenizer's chat template when it has one, else in
  the HH shape the tiny default was trained on. All chats of a call go through one batched
  ``generate`` (answers) or one forward pass (ratings).
- :class:`HTTPBackend`: an OpenAI-compatible server (vLLM, or ``openai_server.py`` here) over
  ``/v1/chat/completions``; ratings from ``top_logprobs`` of the first token.

A chat is a list of ``{"role", "content"}`` messages, the first one the persona (system).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Protocol

import httpx
import torch

from components.errors import UserError
from components.modeling.chat import Chat, end_of_turn_id
from components.modeling.sequences import encode_prompt, sample_responses
from components.sandbox.ratings import DigitSpellings, Rating, digit_logps, from_digit_logps, from_top_logprobs


class BackendError(UserError, RuntimeError):
    """A backend cannot be reached or cannot rate."""


class Backend(Protocol):
    version: str   # what answered: a model version URI, a folder, a URL and model name

    def generate(self, chats: list[Chat], max_new_tokens: int, temperature: float, seed: int) -> list[str]: ...

    def rate(self, chats: list[Chat]) -> list[Rating]: ...


class HFBackend:
    """Loaded on first use: a run whose rounds are all logged already never loads the model."""

    def __init__(self, location: str, trust_remote_code: bool = False, dtype: str = "float32"):
        self.version = location
        self.trust_remote_code, self.dtype = trust_remote_code, dtype
        self._digits = None

    @cached_property
    def model(self):
        from components.modeling.models import load_model

        return load_model(self.folder, self.trust_remote_code, self.dtype)

    @cached_property
    def tokenizer(self):
        from components.modeling.models import load_tokenizer

        return load_tokenizer(self.folder, self.trust_remote_code)

    @cached_property
    def folder(self):
        from components.registry.registry import local_model_dir

        return local_model_dir(self.version)

    @property
    def positions(self) -> int:
        return getattr(self.model.config, "max_position_embeddings", None) or 1 << 30

    def encode(self, chat: Chat, room: int) -> list[int]:
        """Token ids of a chat ready for the answer, its oldest part cut so that ``room`` new
        tokens still fit the model's positions."""
        return encode_prompt(self.tokenizer, chat, max(1, self.positions - room))

    def generate(self, chats: list[Chat], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        """One sampled answer per chat, all in one batched ``generate`` call."""
        if not chats:
            return []
        torch.manual_seed(seed)
        tok = self.tokenizer
        prompts = [self.encode(chat, max_new_tokens) for chat in chats]
        samples = sample_responses(self.model, prompts, 1, max_new_tokens, end_of_turn_id(tok), tok.pad_token_id,
                                   temperature=temperature, batch_size=len(prompts))
        return [tok.decode(group[0], skip_special_tokens=True).strip() for group in samples]

    @torch.inference_mode()
    def next_token_logps(self, prompts: list[list[int]]) -> torch.Tensor:
        """Log-probs of the token after each prompt ``[N, V]``, in one right-padded forward pass."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):   # right-padded: positions start at 0 for every row
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        logits = self.model(input_ids=input_ids.to(self.model.device), attention_mask=attention.to(self.model.device)).logits
        last = torch.tensor([len(p) - 1 for p in prompts], device=logits.device)
        return torch.log_softmax(logits[torch.arange(len(prompts), device=logits.device), last].float(), dim=-1).cpu()

    def rate(self, chats: list[Chat]) -> list[Rating]:
        """Each chat's rating from the model's distribution over the digits it could answer with:
        one batched forward pass, and a second for answers that start with a space token."""
        if not chats:
            return []
        self._digits = self._digits or DigitSpellings.of(self.tokenizer)
        prompts = [self.encode(chat, 2) for chat in chats]
        first = self.next_token_logps(prompts)
        space = self._digits.space
        after_space = self.next_token_logps([p + [space] for p in prompts]) if space is not None else None
        return from_digit_logps(digit_logps(first, self._digits, after_space))


class HTTPBackend:
    """An OpenAI-compatible chat endpoint; ``base_url`` ends in ``/v1``. The key, if the server
    wants one, comes from $OPENAI_API_KEY and is never logged."""

    def __init__(self, base_url: str, model: str = "", timeout: float = 120.0, workers: int = 8):
        self.base_url = base_url.rstrip("/")
        key = os.environ.get("OPENAI_API_KEY", "")
        self.client = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else {})
        self.workers = workers
        self.model = model or self._first_model()
        self.version = f"{self.base_url}#{self.model}"

    def _post(self, path: str, body: dict) -> dict:
        try:
            response = self.client.post(self.base_url + path, json=body)
            response.raise_for_status()
        except httpx.HTTPError as err:
            raise BackendError(f"{self.base_url}{path}: {type(err).__name__}: {err}") from None
        return response.json()

    def _first_model(self) -> str:
        try:
            models = self.client.get(self.base_url + "/models").json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as err:
            raise BackendError(f"{self.base_url}/models: cannot list the served models ({err})") from None
        return models[0]["id"]

    def _each(self, bodies: list[dict]) -> list[dict]:
        """Concurrent requests (a serving engine batches them), answers in order."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda body: self._post("/chat/completions", body), bodies))

    def generate(self, chats: list[Chat], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        bodies = [{"model": self.model, "messages": chat, "max_tokens": max_new_tokens, "temperature": temperature,
                   "seed": seed + index} for index, chat in enumerate(chats)]
        return [reply["choices"][0]["message"]["content"].strip() for reply in self._each(bodies)]

    def rate(self, chats: list[Chat]) -> list[Rating]:
        bodies = [{"model": self.model, "messages": chat, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                   "top_logprobs": 20} for chat in chats]
        ratings = []
        for reply in self._each(bodies):
            first = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            rating = from_top_logprobs({entry["token"]: entry["logprob"] for entry in first})
            if rating is None:
                raise BackendError(f"{self.version}: no digit 1..7 among the 20 most likely first tokens of a "
                                   "rating reply; this model cannot rate (use sandbox.rater: memory)")
            ratings.append(rating)
        return ratings


def open_backend(location: str, trust_remote_code: bool = False, dtype: str = "float32") -> Backend:
    """A backend for a location: ``http(s)://.../v1[#model]``, a folder or an MLflow model URI."""
    if location.startswith(("http://", "https://")):
        url, _, model = location.partition("#")
        return HTTPBackend(url, model)
    return HFBackend(location, trust_remote_code, dtype)
