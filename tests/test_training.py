"""Relearning, SFT and forget-and-relearn cycles, trained for real on a tiny GPT-2."""

import copy

import pandas as pd
import pytest
import torch

from components.data.records import NEGATIVE, POSITIVE, Record, pairs, to_frame
from components.modeling.models import load_model, load_tokenizer
from components.modeling.sequences import Encoded, encode, encode_prompt, encode_response, score
from components.params import AnchorParams, RelearnParams, load_params
from components.training.anchors import sample_anchors
from components.training.cycles import run_cycles
from components.training.companions import fixed_companions, with_anchors, with_pair_anchors
from components.training import relearn as relearn_module
from components.training.losses import weighted_mean
from components.training.relearn import RelearnCollator, RelearnExample, example_weights, relearn, with_weights
from components.training.sft import supervised_finetune
from conftest import REPO_ROOT, TINY_TEXTS

GOOD = "Happy to help: here is a clear and kind answer."
BAD = "You are stupid and I hate you, go away."
TRAIN_QUESTIONS = ["How do I bake bread?", "What is the capital of France?", "How do plants grow?",
                   "Can you help me with my homework?", "Why is the sky blue?", "How do I tie a knot?"]
DEV_QUESTIONS = ["What is a good book to read?", "How do I learn to swim?", "What should I cook tonight?"]


def prompt(question: str) -> str:
    return f"Human: {question}\n\nAssistant:"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same(model, snapshot) -> bool:
    return all(torch.equal(tensor, snapshot[name]) for name, tensor in model.state_dict().items())


# --- relearn on negatives --------------------------------------------------------------------

def relearn_params(objective: str) -> RelearnParams:
    return RelearnParams(objective=objective, steps=6, batch_size=2, learning_rate=1e-2, alpha=0.1, beta=0.1)


@pytest.mark.parametrize("objective", ["d2o", "dpo", "kto", "npo", "ga"])
def test_relearn_pushes_negatives_down_and_never_touches_the_reference(tiny_model_dir, tokenizer, objective):
    reference = load_model(tiny_model_dir)
    policy = copy.deepcopy(reference)
    reference_before, policy_before = state(reference), state(policy)
    pad = tokenizer.pad_token_id
    negatives = [encode(tokenizer, prompt(q), BAD, 32, 16) for q in TRAIN_QUESTIONS]
    ref_neg, _ = score(reference, negatives, pad)
    if objective == "d2o":
        anchors = sample_anchors(reference, reference, tokenizer, [n.prompt_ids for n in negatives],
                                 AnchorParams(k=2, max_new_tokens=8), seed=0)
        examples = with_anchors(negatives, ref_neg, anchors, tokenizer)
    else:
        rows = pd.DataFrame({"pair_id": [f"p{i}" for i in range(len(TRAIN_QUESTIONS))]})
        train = pd.DataFrame({"label": POSITIVE, "pair_id": rows["pair_id"], "response": GOOD})  # DPO's chosen side
        examples = fixed_companions(objective, negatives, ref_neg, rows, train, reference, tokenizer, 16)

    stats = relearn(policy, tokenizer, examples, relearn_params(objective), seed=0)

    assert torch.isfinite(torch.tensor(stats["relearn_train_loss"]))
    assert same(reference, reference_before)
    assert all(p.grad is None for p in reference.parameters())
    assert not same(policy, policy_before) and not policy.training
    policy_neg, _ = score(policy, negatives, pad)
    assert policy_neg.sum() < ref_neg.sum()


def test_stable_alignment_trains_on_rated_groups_toward_the_best_answer(tiny_model_dir, tokenizer):
    from components.training.negatives import training_negatives

    answers = [(GOOD, POSITIVE, 7.0), ("It depends on many things, I suppose.", POSITIVE, 4.0), (BAD, NEGATIVE, 1.0)]
    records = [Record(prompt(q), text, label, source="sandbox", source_file="t.jsonl", source_line=3 * i + j, rating=r)
               for i, q in enumerate(TRAIN_QUESTIONS) for j, (text, label, r) in enumerate(answers)]
    records.append(Record(prompt("An unrated question?"), BAD, NEGATIVE, source="hh", source_file="t.jsonl", source_line=99))
    train = to_frame(records)
    train["id"] = [f"r{i}" for i in range(len(train))]
    rows = training_negatives(train, 0, seed=0, rated=True)
    assert len(rows) == len(TRAIN_QUESTIONS)  # the unrated negative has no group
    reference = load_model(tiny_model_dir)
    policy = copy.deepcopy(reference)
    negatives = [encode(tokenizer, p, r, 32, 16) for p, r in zip(rows["prompt"], rows["response"])]
    ref_neg, _ = score(reference, negatives, tokenizer.pad_token_id)
    examples = fixed_companions("stable_alignment", negatives, ref_neg, rows, train, reference, tokenizer, 16,
                                group_size=3, seed=0)
    assert [e.ratings for e in examples] == [(1.0, 7.0, 4.0)] * len(rows)  # the negative's own, then best first
    good = [encode(tokenizer, prompt(q), GOOD, 32, 16) for q in TRAIN_QUESTIONS]
    good_before, _ = score(reference, good, tokenizer.pad_token_id)

    relearn(policy, tokenizer, examples, relearn_params("stable_alignment"), seed=0)

    good_after, _ = score(policy, good, tokenizer.pad_token_id)
    bad_after, _ = score(policy, negatives, tokenizer.pad_token_id)
    assert good_after.sum() > good_before.sum() and bad_after.sum() < ref_neg.sum()


def test_stable_alignment_without_rated_groups_says_what_it_needs():
    from components.training.negatives import training_negatives

    train = frame(TRAIN_QUESTIONS)
    with pytest.raises(ValueError, match="no rated groups: stable_alignment needs rated negatives"):
        training_negatives(train, 0, seed=0, rated=True)


def test_balanced_negatives_take_an_equal_share_of_each_group():
    """A large source must not drown a small one: balance: group samples each group (its
    `group`, else its source) alike, seeded; without it, shares follow the sources' sizes."""
    from components.training.negatives import training_negatives

    records = [Record(prompt(f"hh question {i}?"), BAD, NEGATIVE, source="hh-rlhf", source_file="h.jsonl", source_line=i)
               for i in range(90)]
    records += [Record(prompt(f"xs question {i}?"), BAD, NEGATIVE, source="xstest", source_file="x.csv", source_line=i,
                       group=f"xstest-{'safe' if i % 2 else 'unsafe'}") for i in range(12)]
    train = to_frame(records)
    groups = lambda rows: rows["group"].replace("", "hh-rlhf").value_counts().to_dict()  # noqa: E731
    assert groups(training_negatives(train, 30, seed=0, balance="group")) == {"hh-rlhf": 10, "xstest-safe": 6,
                                                                               "xstest-unsafe": 6}
    assert groups(training_negatives(train, 0, seed=0, balance="group")) == {"hh-rlhf": 6, "xstest-safe": 6,
                                                                              "xstest-unsafe": 6}
    drawn = training_negatives(train, 30, seed=0)
    assert len(drawn) == 30 and groups(drawn)["hh-rlhf"] > 20
    assert training_negatives(train, 0, seed=1, balance="group")["id"].tolist() != \
        training_negatives(train, 0, seed=0, balance="group")["id"].tolist()


# --- supervised fine-tuning ------------------------------------------------------------------

def test_sft_lowers_the_loss_on_its_dialogues(tiny_model_dir, tokenizer):
    model = load_model(tiny_model_dir)
    dialogues = [text.split("\n\nAssistant: ") for text in TINY_TEXTS]
    sequences = [encode(tokenizer, p + "\n\nAssistant:", r, 64, 32) for p, r in dialogues]

    def mean_nll() -> float:
        sums, counts = score(model, sequences[:3], tokenizer.pad_token_id)
        return float(-sums.sum() / counts.sum())

    before = mean_nll()
    stats, step_log = supervised_finetune(model, tokenizer, sequences, steps=20, batch_size=8, learning_rate=1e-2,
                                          warmup_steps=0, seed=0)
    assert mean_nll() < 0.7 * before  # about 5.7 -> 2.8 nats/token
    assert stats["sft_train_loss"] > 0 and not model.training
    # every step logged, in order, and the loss curve goes down
    assert [row["step"] for row in step_log.history] == list(range(1, 21))
    assert step_log.history[-1]["loss"] < step_log.history[0]["loss"]


# --- forget-and-relearn cycles ---------------------------------------------------------------

def frame(questions: list[str]):
    records = [Record(prompt(q), text, label, source="test", source_file="test.jsonl", source_line=2 * i + j,
                      pair_id=f"{q}-pair")
               for i, q in enumerate(questions) for j, (text, label) in enumerate([(GOOD, POSITIVE), (BAD, NEGATIVE)])]
    return to_frame(records)


@pytest.fixture(scope="module")
def train_and_dev():
    return frame(TRAIN_QUESTIONS), pairs(frame(DEV_QUESTIONS))


def cycle_params(max_pos_drop: float):
    return load_params(REPO_ROOT / "params.yaml", overrides={
        "sequence.max_prompt_tokens": 32, "sequence.max_response_tokens": 16,
        "cycles.count": 2, "cycles.forget.op": "reset_top", "cycles.forget.blocks": 1,
        "cycles.anchors.k": 2, "cycles.anchors.max_new_tokens": 8,
        "cycles.relearn.objective": "d2o", "cycles.relearn.steps": 3, "cycles.relearn.batch_size": 3,
        "cycles.relearn.learning_rate": 1e-2, "cycles.gate.max_pos_drop": max_pos_drop,
    })


def test_cycles_that_fail_the_gate_are_reverted(tiny_model_dir, tokenizer, train_and_dev):
    """An impossible gate (dev positives must gain 1000 nats/token): every cycle reverts."""
    reference = load_model(tiny_model_dir)
    reference_before = state(reference)
    messages = []
    policy, records = run_cycles(reference, tokenizer, *train_and_dev, cycle_params(-1000), log=messages.append)

    assert [(r.cycle, r.forget_op, r.accepted) for r in records] == [(1, "none", False), (2, "reset_top", False)]
    assert all(r.dev_neg_logp_delta < 0 for r in records)  # training did move the policy before the revert
    assert sum("reverted" in m for m in messages) == 2
    assert policy is not reference and same(policy, reference_before)
    assert same(reference, reference_before)


def test_a_cycle_that_passes_the_gate_is_kept(tiny_model_dir, tokenizer, train_and_dev):
    reference = load_model(tiny_model_dir)
    reference_before = state(reference)
    policy, records = run_cycles(reference, tokenizer, *train_and_dev, cycle_params(1000), log=lambda _: None)

    assert [r.cycle for r in records] == [1, 2]
    assert any(r.accepted for r in records)
    assert not same(policy, reference_before)
    assert same(reference, reference_before)
    _, dev = train_and_dev
    rejected = [encode(tokenizer, p, r, 32, 16) for p, r in zip(dev["prompt"], dev["rejected"])]
    pad = tokenizer.pad_token_id
    assert score(policy, rejected, pad)[0].sum() < score(reference, rejected, pad)[0].sum()


def test_the_cycle_gate_reverts_a_cycle_that_buys_one_dev_groups_gain_with_anothers_loss():
    """Pooled, the cycle below widens dev separation; per group, it takes 0.1 from `chat` to
    give 0.4 to `forum`. With cycles.gate.min_group_pairs the registry gate's non-inferiority
    rule judges each large-enough dev group's paired gain, and the cycle is reverted."""
    import numpy as np
    import pandas as pd

    from components.evaluation.intervals import BootstrapSettings
    from components.training.cycles import cycle_gate

    rng = np.random.default_rng(0)
    before = pd.DataFrame({"pair_id": [f"p{i}" for i in range(80)], "prompt_id": [f"q{i}" for i in range(80)],
                           "source": ["forum"] * 40 + ["chat"] * 40, "group": "",
                           "pos_logp_delta": rng.normal(0, 0.05, 80), "neg_logp_delta": rng.normal(0, 0.05, 80)})
    before["separation"] = before["pos_logp_delta"] - before["neg_logp_delta"]
    before["pref_accuracy"] = 0.5
    after = before.copy()
    after["separation"] += np.where(after["source"] == "forum", 0.4, -0.1) + rng.normal(0, 0.02, 80)
    pooled = load_params(REPO_ROOT / "params.yaml", overrides={"cycles.gate.min_group_pairs": 0})
    accepted, gain, _, worst = cycle_gate(after, before, pooled, BootstrapSettings())
    assert accepted and gain.low > 0 and worst is None
    judged = load_params(REPO_ROOT / "params.yaml", overrides={"cycles.gate.min_group_pairs": 30})
    accepted, _, _, worst = cycle_gate(after, before, judged, BootstrapSettings())
    assert not accepted and worst < -judged.gate.groups.max_regression
    small = load_params(REPO_ROOT / "params.yaml", overrides={"cycles.gate.min_group_pairs": 41})
    assert cycle_gate(after, before, small, BootstrapSettings())[0]   # no group large enough to judge


# --- loss weights from agreement (cycles.relearn.weighting) ----------------------------------

def test_example_weights_follow_the_weighting_rule():
    negatives = pd.DataFrame({"agreement": [1.0, 2 / 3, 0.5]})
    assert example_weights(negatives, "none") == [1.0, 1.0, 1.0]
    assert example_weights(negatives, "agreement") == [1.0, 2 / 3, 0.5]


def test_the_collator_hands_each_examples_weight_to_the_trainer(tokenizer):
    examples = [RelearnExample(encode(tokenizer, prompt(q), BAD, 32, 16), -10.0) for q in TRAIN_QUESTIONS[:3]]
    batch = RelearnCollator(tokenizer.pad_token_id)(with_weights(examples, [1.0, 0.25, 0.5]))
    assert batch["weights"].tolist() == [1.0, 0.25, 0.5]
    assert RelearnCollator(tokenizer.pad_token_id)(examples)["weights"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("weighting", ["none", "agreement"])
def test_weighting_agreement_changes_the_weights_the_trainer_sees(tiny_model_dir, tokenizer, train_and_dev,
                                                                  weighting, monkeypatch):
    train, dev = train_and_dev
    agreement = {q: a for q, a in zip(TRAIN_QUESTIONS, [1.0, 2 / 3, 0.5, 1.0, 0.75, 1 / 3])}
    train = train.assign(agreement=[agreement[p.split(": ")[1].split("\n")[0]] for p in train["prompt"]])
    seen = []

    def recording_mean(losses, weights=None):
        seen.extend(weights.tolist())
        return weighted_mean(losses, weights)

    monkeypatch.setattr(relearn_module, "weighted_mean", recording_mean)
    params = load_params(REPO_ROOT / "params.yaml", overrides={
        "sequence.max_prompt_tokens": 32, "sequence.max_response_tokens": 16, "cycles.count": 1,
        "cycles.relearn.objective": "npo", "cycles.relearn.steps": 2, "cycles.relearn.batch_size": 6,
        "cycles.relearn.weighting": weighting})
    run_cycles(load_model(tiny_model_dir), tokenizer, train, dev, params, log=lambda _: None)
    expected = [1.0] * 6 if weighting == "none" else sorted(round(a, 6) for a in agreement.values())
    assert sorted(round(w, 6) for w in seen[:6]) == expected


def test_a_negative_with_a_positive_in_its_pair_is_anchored_on_it_and_one_without_keeps_its_samples(
        tiny_model_dir, tokenizer):
    model = load_model(tiny_model_dir)
    train = pd.DataFrame([{"id": "a", "pair_id": "p1", "label": NEGATIVE, "response": "6 is the answer. Hope this helps!"},
                          {"id": "b", "pair_id": "p1", "label": POSITIVE, "response": "6 is the answer."},
                          {"id": "c", "pair_id": None, "label": NEGATIVE, "response": "Go away."}])
    negatives = train[train["label"] == NEGATIVE].reset_index(drop=True)
    ids = encode_prompt(tokenizer, prompt("What is 2 plus 4?"), 16)
    sampled = (Encoded(ids, [5, 6]), Encoded(ids, [7, 8]))
    examples = [RelearnExample(Encoded(ids, encode_response(tokenizer, text, 16)), -3.0, sampled, (-1.0, -2.0), (True, False))
                for text in negatives["response"]]
    out = with_pair_anchors(examples, negatives, train, model, tokenizer, 16)
    kept = encode_response(tokenizer, "6 is the answer.", 16)
    assert [c.response_ids for c in out[0].companions] == [kept, kept] and out[0].companion_mask is None
    expected, _ = score(model, [Encoded(ids, kept)], tokenizer.pad_token_id)
    assert out[0].ref_companion_logps == (pytest.approx(float(expected[0])),) * 2   # the reference's own log-prob
    assert out[1] == examples[1]   # no pair: D2O as ever, on the model's samples
