"""Several processes (compute.processes): a process's share of the anchors is exactly that
part of the single-process anchors, and shares go back together in order."""

from __future__ import annotations

import torch

from components import distributed
from components.modeling.models import load_model, load_tokenizer
from components.modeling.sequences import encode_prompt
from components.params import AnchorParams
from components.training import anchors as anchors_module
from components.training.anchors import sample_anchors
from test_training import TRAIN_QUESTIONS, prompt


def test_the_second_of_two_processes_samples_the_single_process_anchors_of_its_batches(tiny_model_dir, monkeypatch):
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = [encode_prompt(tokenizer, prompt(q), 32) for q in TRAIN_QUESTIONS]   # 6 prompts: batches of 2
    params = AnchorParams(k=2, max_new_tokens=8, batch_size=2)
    alone = sample_anchors(model, model, tokenizer, prompts, params, seed=3)

    monkeypatch.setattr(distributed, "world", lambda: (1, 2))          # rank 1 of 2: batches 1 (and 3, none)
    monkeypatch.setattr(anchors_module, "gather", lambda mine: mine)   # its own share only
    share = sample_anchors(model, model, tokenizer, prompts, params, seed=3)

    assert share.responses == alone.responses[2:4]
    assert torch.equal(share.ref_logps, alone.ref_logps[2:4])


def test_shares_gather_back_in_order(monkeypatch):
    items = list(range(7))
    shares = {}
    for rank in range(3):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (rank, 3))
        shares[rank] = distributed.share(items)

    def all_gather_object(parts, mine):
        parts[:] = [shares[r] for r in range(3)]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    assert distributed.gather(shares[0]) == items
