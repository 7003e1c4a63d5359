"""alignpipe's DPO and KTO losses against TRL 1.16's own numbers.

TRL 1.16 has no standalone loss function: ``DPOTrainer`` and ``KTOTrainer`` compute the loss
inside ``compute_loss(model, inputs)`` (``_compute_loss``), which runs the policy forward
itself, then reads the reference log-probs from the batch when ``precompute_ref_log_probs``
is on. So these tests build *real* trainers on the tiny saved model (``tiny_model_dir``),
collate token ids with TRL's own collators, put random reference log-probs into the batch
(that is where TRL's precomputed ones travel) and call TRL's ``compute_loss``. alignpipe
scores the same token ids with ``sequence_logps`` on an independently loaded copy of the
model and applies its pure loss functions; the two must agree.

TRL returns the *batch mean*, so per-example losses are compared one example per call.
The KTO comparison uses only undesirable examples (``label=False``) with
``desirable_weight = undesirable_weight = 1``. TRL's form for them is
``1 - sigmoid(beta * (kl - rejected_logratios))`` with ``kl = mean(KL_logps - ref_KL_logps)``
clamped at 0 over the batch's mismatched (prompt, completion) pairs: the same as
``kto_undesirable_loss`` with ``z0 = kl``. TRL's KL estimate is read from the trainer's
logged ``kl`` metric (private ``_metrics``, the only place TRL exposes it) and passed in as
z0. TRL cycles completions by +1 the other way round from ``companions.with_mismatched``
(i gets i-1's, not i+1's); that is a data choice, so both sides here get the same KL pairs.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl", reason="TRL is a dev extra (pip install -e '.[dev]')")
from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer  # noqa: E402

from components.modeling.models import load_model, load_tokenizer  # noqa: E402
from components.modeling.sequences import Encoded, collate, encode, encode_response, sequence_logps  # noqa: E402
from components.params import RelearnParams  # noqa: E402
from components.training.losses import dpo_loss, kto_undesirable_loss  # noqa: E402
from components.training.relearn import objective_losses  # noqa: E402

BETA = 0.1
QUESTIONS = ["How do I bake bread?", "What is the capital of France?", "Tell me something mean.",
             "How do plants grow?", "Why is the sky blue?", "How do I tie a knot?"]
GOOD = ["Mix flour, water, yeast and salt, then bake.", "Paris is the capital of France.",
        "I would rather not insult anyone.", "With light, water and soil.", "Air scatters blue light.",
        "Cross the ends, loop one under and pull."]
BAD = ["Go away.", "I hate you.", "You are stupid.", "No idea, stop asking.", "Who cares?", "Figure it out yourself."]


def prompt(question: str) -> str:
    return f"Human: {question}\n\nAssistant:"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    """alignpipe's side: an unpatched copy (TRL patches its own model's forward in place)."""
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def encoded(tokenizer):
    """(prompt ids, chosen ids, rejected ids) per question, tokenized the alignpipe way."""
    rows = []
    for q, good, bad in zip(QUESTIONS, GOOD, BAD):
        negative = encode(tokenizer, prompt(q), bad, 32, 16)
        rows.append((negative.prompt_ids, encode_response(tokenizer, good, 16), negative.response_ids))
    return rows


def trl_args(config_cls, tmp_path, **extra):
    # TRL's configs default to bf16 and gradient checkpointing; alignpipe's tiny model is fp32
    return config_cls(output_dir=str(tmp_path), per_device_train_batch_size=2, beta=BETA, max_length=None,
                      bf16=False, gradient_checkpointing=False, dataloader_pin_memory=False,
                      precompute_ref_log_probs=True, report_to="none", save_strategy="no", disable_tqdm=True,
                      **extra)


def alignpipe_logps(model, sequences: list[Encoded], pad_id: int) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logps(model, collate(sequences, pad_id))[0]


def random_refs(logps: torch.Tensor, seed: int, spread: float = 15.0) -> torch.Tensor:
    """Reference log-probs near the policy's, so β·margin spans the non-linear part of σ."""
    generator = torch.Generator().manual_seed(seed)
    return logps + spread * torch.randn(logps.shape, generator=generator)


# --- DPO (sigmoid) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dpo_trainer(tiny_model_dir, tokenizer, tmp_path_factory):
    # A real DPOTrainer: init tokenizes this small dataset and precomputes its reference
    # log-probs once (cheap); the tests then call its compute_loss on their own batches.
    data = Dataset.from_dict({"prompt": [prompt(q) for q in QUESTIONS], "chosen": [" " + g for g in GOOD],
                              "rejected": [" " + b for b in BAD]})
    args = trl_args(DPOConfig, tmp_path_factory.mktemp("trl-dpo"), loss_type=["sigmoid"])
    trainer = DPOTrainer(model=load_model(tiny_model_dir), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.model.train()  # dropout is off in the tiny model; "train" selects TRL's train metrics
    return trainer


def trl_dpo_loss(trainer, rows, ref_chosen, ref_rejected) -> tuple[float, float]:
    examples = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r, "ref_chosen_logps": float(rc),
                 "ref_rejected_logps": float(rr)} for (p, c, r), rc, rr in zip(rows, ref_chosen, ref_rejected)]
    batch = trainer.data_collator(examples)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return float(loss), trainer._metrics["train"]["logps/chosen"][-1]


@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_sigmoid_matches_trl_per_pair_and_per_batch(dpo_trainer, policy, tokenizer, encoded, seed):
    pad = tokenizer.pad_token_id
    chosen = alignpipe_logps(policy, [Encoded(p, c) for p, c, _ in encoded], pad)
    rejected = alignpipe_logps(policy, [Encoded(p, r) for p, _, r in encoded], pad)
    ref_chosen, ref_rejected = random_refs(chosen, seed), random_refs(rejected, seed + 100)

    ours = dpo_loss(chosen, ref_chosen, rejected, ref_rejected, BETA)
    assert ours.std() > 0.05  # the random references do spread the losses

    per_pair = []
    for i, row in enumerate(encoded):
        loss, trl_chosen_logp = trl_dpo_loss(dpo_trainer, [row], ref_chosen[i : i + 1], ref_rejected[i : i + 1])
        per_pair.append(loss)
        # TRL sums the same completion tokens' log-probs as alignpipe (its fused LM head vs our logits)
        assert trl_chosen_logp == pytest.approx(float(chosen[i]), abs=1e-3)
    assert torch.allclose(torch.tensor(per_pair), ours, atol=1e-5, rtol=1e-5)

    batch_loss, _ = trl_dpo_loss(dpo_trainer, encoded, ref_chosen, ref_rejected)
    assert batch_loss == pytest.approx(float(ours.mean()), abs=1e-5)
    # and through the relearn objective dispatch (companion = chosen, K = 1)
    dispatched = objective_losses(RelearnParams(objective="dpo", beta=BETA), rejected, ref_rejected,
                                  chosen[:, None], ref_chosen[:, None])
    assert torch.allclose(dispatched, ours)


# --- KTO, undesirable examples only -----------------------------------------------------------

@pytest.fixture(scope="module")
def kto_trainer(tiny_model_dir, tokenizer, tmp_path_factory):
    data = Dataset.from_dict({"prompt": [prompt(q) for q in QUESTIONS], "completion": [" " + b for b in BAD],
                              "label": [False] * len(BAD)})
    args = trl_args(KTOConfig, tmp_path_factory.mktemp("trl-kto"), loss_type="kto",
                    desirable_weight=1.0, undesirable_weight=1.0)
    trainer = KTOTrainer(model=load_model(tiny_model_dir), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.model.train()
    return trainer


@pytest.mark.parametrize("kl_target", [-4.0, 6.0], ids=["kl-clamped-to-zero", "kl-positive"])
def test_kto_undesirable_matches_trl(kto_trainer, policy, tokenizer, encoded, kl_target):
    """The reference KL log-probs sit ``kl_target`` nats below the policy's, so TRL's KL estimate
    is clamped to 0 (negative target) or positive."""
    pad = tokenizer.pad_token_id
    n = len(encoded)
    prompts = [p for p, _, _ in encoded]
    negatives = [r for _, _, r in encoded]
    kl_completions = [negatives[i - 1] for i in range(n)]  # TRL's rotation: example i gets completion i-1
    policy_neg = alignpipe_logps(policy, [Encoded(p, r) for p, r in zip(prompts, negatives)], pad)
    policy_kl = alignpipe_logps(policy, [Encoded(p, r) for p, r in zip(prompts, kl_completions)], pad)
    ref_neg = random_refs(policy_neg, seed=7)
    ref_kl = random_refs(policy_kl, seed=8, spread=1.0) - kl_target

    examples = [{"prompt_ids": p, "completion_ids": r, "KL_completion_ids": k, "label": False,
                 "ref_logps": float(rn), "ref_KL_logps": float(rk)}
                for p, r, k, rn, rk in zip(prompts, negatives, kl_completions, ref_neg, ref_kl)]
    with torch.no_grad():
        trl_loss = float(kto_trainer.compute_loss(kto_trainer.model, kto_trainer.data_collator(examples)))
    trl_kl = kto_trainer._metrics["train"]["kl"][-1]

    # alignpipe's z0, computed as RelearnTrainer does, equals TRL's KL estimate
    z0 = (policy_kl - ref_kl).mean().clamp(min=0)
    assert trl_kl == pytest.approx(float(z0), abs=1e-4)
    assert (trl_kl == 0.0) == (kl_target < 0)

    # the pure loss with TRL's KL estimate passed in as z0
    ours = kto_undesirable_loss(policy_neg, ref_neg, BETA, torch.tensor(trl_kl))
    assert ours.std() > 0.01
    assert trl_loss == pytest.approx(float(ours.mean()), abs=1e-5)

    # and through the relearn objective dispatch, which estimates z0 from the mismatched companions
    dispatched = objective_losses(RelearnParams(objective="kto", beta=BETA), policy_neg, ref_neg,
                                  policy_kl[:, None], ref_kl[:, None])
    assert trl_loss == pytest.approx(float(dispatched.mean()), abs=1e-5)
