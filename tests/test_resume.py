"""Resuming after a crash, in process: relearn from its newest finished checkpoint, the cycles
from the last finished cycle, each ending exactly where an uninterrupted run ends."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import TrainerCallback

from components.modeling.models import load_model, load_tokenizer
from components.modeling.sequences import encode, score
from components.params import AnchorParams, RelearnParams
from components.training.anchors import sample_anchors
from components.training.checkpoints import latest_checkpoint
from components.training.companions import with_anchors
from components.training.cycles import run_cycles
from components.training.relearn import relearn
from components.training.resume import WorkFolder
from components.training.step_log import StepLog
from test_training import BAD, TRAIN_QUESTIONS, cycle_params, prompt, state, train_and_dev  # noqa: F401

PARAMS = RelearnParams(objective="d2o", steps=6, batch_size=2, learning_rate=1e-2)


class Crash(Exception):
    pass


class CrashAt(TrainerCallback):
    """Stands in for ``kill -9`` at the end of a step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash


class StartStep(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    reference, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    negatives = [encode(tokenizer, prompt(q), BAD, 32, 16) for q in TRAIN_QUESTIONS]
    ref_neg, _ = score(reference, negatives, tokenizer.pad_token_id)
    anchors = sample_anchors(reference, reference, tokenizer, [n.prompt_ids for n in negatives],
                             AnchorParams(k=2, max_new_tokens=8), seed=0)
    return reference, tokenizer, with_anchors(negatives, ref_neg, anchors, tokenizer)


def train(setup, folder, callbacks=()):
    reference, tokenizer, examples = setup
    policy, log = copy.deepcopy(reference), StepLog("relearn")
    loss = relearn(policy, tokenizer, examples, PARAMS, seed=0, callbacks=[log, *callbacks], checkpoints=folder,
                   checkpoint_steps=2)
    return policy, loss, log.history


def test_relearn_resumes_from_its_newest_finished_checkpoint_and_ends_as_if_never_stopped(setup, tmp_path):
    expected_policy, expected_loss, expected_history = train(setup, tmp_path / "straight")
    folder = tmp_path / "killed"
    with pytest.raises(Crash):
        train(setup, folder, [CrashAt(5)])
    assert latest_checkpoint(folder).name == "checkpoint-4"
    assert {p.name for p in (folder / "checkpoint-4").iterdir()} >= {"model.safetensors", "optimizer.pt", "rng_state.pth"}
    assert not (folder / "checkpoint-4" / "pytorch_model.bin").exists()

    start = StartStep()
    policy, loss, history = train(setup, folder, [start])

    assert start.step == 4
    assert all(torch.equal(tensor, state(expected_policy)[name]) for name, tensor in state(policy).items())
    assert loss == expected_loss and history == expected_history


def test_a_checkpoint_a_kill_cut_short_is_passed_over(setup, tmp_path):
    folder = tmp_path / "killed"
    with pytest.raises(Crash):
        train(setup, folder, [CrashAt(5)])
    (folder / "checkpoint-4" / "progress-0.json").unlink()   # killed while the Trainer wrote checkpoint 4
    assert latest_checkpoint(folder).name == "checkpoint-2"
    start = StartStep()
    train(setup, folder, [start])
    assert start.step == 2


def test_cycles_resume_after_the_last_finished_cycle(tiny_model_dir, train_and_dev, tmp_path):  # noqa: F811
    reference, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    params = cycle_params(1000)
    expected_policy, expected = run_cycles(reference, tokenizer, *train_and_dev, params, log=lambda _: None)
    work = WorkFolder(tmp_path, {"run": "killed"})

    def crash_in_cycle_2(message: str) -> None:
        if message.startswith("cycle 2: forget"):
            raise Crash

    with pytest.raises(Crash):
        run_cycles(reference, tokenizer, *train_and_dev, params, log=crash_in_cycle_2, work=work)
    messages = []
    policy, records = run_cycles(reference, tokenizer, *train_and_dev, params, log=messages.append, work=work)

    assert messages[0].startswith("resuming after cycle 1")
    assert not any(m.startswith("cycle 1:") for m in messages)
    without_time = [{**r.as_dict(), "seconds": 0} for r in records]
    assert without_time == [{**r.as_dict(), "seconds": 0} for r in expected]
    assert all(torch.equal(tensor, state(expected_policy)[name]) for name, tensor in state(policy).items())
