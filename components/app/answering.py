"""The worker's job: answer one chat turn with the model that serves the person, stream it,
and store it with the versions that wrote it. The prompt is the conversation under way and
nothing else stored (never a reason or a comment)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from components.app.conversations import DONE, FAILED, STOPPED, finish
from components.app.generation import HH_NEXT_TURN, Job, answer_text
from components.app.schema import Account
from components.app.serving import MODELS, ModelCache, resolve
from components.errors import UserError
from components.params import Params
from components.policy.policies import Policies

logger = logging.getLogger("alignpipe.app")
STREAM_TICK_S = 0.5   # a reader of the stream wakes this often, to keep its connection alive


class Answerer:
    """``answerer(job)``, run by the generation thread (``GenerationQueue(Answerer(...))``)."""

    def __init__(self, params: Params, policies: Policies, sessions: sessionmaker[Session], cache: ModelCache | None = None):
        self.params, self.policies, self.sessions = params, policies, sessions
        self.cache = cache or MODELS

    def __call__(self, job: Job) -> None:
        try:
            with self.sessions.begin() as session:
                account = session.get(Account, job.account_id)
                job.served = resolve(self.params, self.policies, account)
            model, tokenizer = self.cache.get(job.served.uri)
            job.text = self._generate(job, model, tokenizer)
            job.status = STOPPED if job.cancelled.is_set() else DONE
        except UserError as err:   # no model yet: the person is told what to do
            logger.warning("answer to message %s: %s", job.message_id, err)
            job.status, job.error = FAILED, str(err)
        except Exception:
            logger.exception("answer to message %s failed", job.message_id)
            job.status, job.error = FAILED, "the model failed to answer (the app's log says why)"
        with self.sessions.begin() as session:
            finish(session, job.message_id, job.text, job.status, job.served.columns() if job.served else {})

    def _generate(self, job: Job, model, tokenizer) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from components.modeling.sequences import encode_prompt

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), job.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        settings = self.params.app
        limit = getattr(model.config, "max_position_embeddings", None) or 2048
        max_new = min(settings.max_new_tokens, limit // 2)
        ids = encode_prompt(tokenizer, job.chat, min(self.params.sequence.max_prompt_tokens, limit - max_new))
        transcript = not tokenizer.chat_template
        job.streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                            timeout=STREAM_TICK_S)
        job.started.set()
        configured = model.generation_config.eos_token_id
        stops = sorted({tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None})
        sampling = ({"do_sample": True, "temperature": settings.temperature} if settings.temperature > 0
                    else {"do_sample": False})
        with torch.no_grad():
            output = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=max_new, eos_token_id=stops,
                                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
                                    streamer=job.streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                                    **({"stop_strings": [HH_NEXT_TURN], "tokenizer": tokenizer} if transcript else {}),
                                    **sampling)
        return answer_text(tokenizer.decode(output[0, len(ids):], skip_special_tokens=True), transcript)
