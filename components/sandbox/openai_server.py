"""A small OpenAI-compatible server for one local model: ``/v1/models`` and
``/v1/chat/completions`` (with ``logprobs``/``top_logprobs`` for the first token).

It lets the sandbox's HTTP backend be tested and used offline against the same models the HF
backend loads (``alignpipe model-server --model models:/alignpipe-policy@champion``). Teams with
GPUs point ``sandbox.model`` at a serving engine such as vLLM instead; this one answers
requests one at a time.
"""

from __future__ import annotations

import time
import uuid

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from components.sandbox.backends import HFBackend


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str = ""
    messages: list[Message]
    max_tokens: int = 16
    temperature: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0


def first_token_logprobs(backend: HFBackend, chat: list[dict], top: int) -> tuple[str, list[dict]]:
    """The most likely first token and the ``top`` most likely with their log-probs."""
    ids = torch.tensor([backend.encode(chat, 1)], device=backend.model.device)
    with torch.inference_mode():
        logps = torch.log_softmax(backend.model(input_ids=ids).logits[0, -1].float(), dim=-1)
    values, indices = logps.topk(max(1, top))
    entries = [{"token": backend.tokenizer.decode([int(i)]), "logprob": float(v)} for v, i in zip(values, indices)]
    return entries[0]["token"], entries


def create_app(backend: HFBackend, name: str) -> FastAPI:
    app = FastAPI(title=f"alignpipe model server: {name}")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "alignpipe"}]}

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest) -> dict:
        messages = [m.model_dump() for m in request.messages]
        choice = {"index": 0, "finish_reason": "length", "logprobs": None}
        if request.logprobs:
            token, entries = first_token_logprobs(backend, messages, request.top_logprobs)
            choice["logprobs"] = {"content": [{"token": token, "logprob": entries[0]["logprob"], "top_logprobs": entries}]}
        if request.temperature <= 0 and request.max_tokens == 1 and request.logprobs:
            text = token
        else:
            text = backend.generate([messages], request.max_tokens, max(request.temperature, 1e-5), request.seed or 0)[0]
        choice["message"] = {"role": "assistant", "content": text}
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [choice]}

    return app


def serve(location: str, host: str, port: int, trust_remote_code: bool = False, dtype: str = "float32") -> None:
    import uvicorn

    uvicorn.run(create_app(HFBackend(location, trust_remote_code, dtype), location), host=host, port=port,
                log_level="warning")
