"""Forgetting operations and the relearn-resistance probe, on tiny GPT-2 and Llama models saved locally."""

import copy
import math
import typing

import pytest
import torch

from components.evaluation.relearn_probe import relearn_resistance
from components.modeling.models import decoder_blocks, load_model, load_tokenizer
from components.modeling.sequences import encode, score
from components.params import ForgetOp, ForgetParams, RelearnParams
from components.training.companions import plain
from components.training.forgetting import FORGET_OPS, forget
from components.training.relearn import relearn
from components.training.sft import supervised_finetune

ARCHS = ["gpt2", "llama"]
CHANGING_OPS = ["reset_top", "partial_reset", "shrink_perturb", "magnitude_zero"]


def trained_looking(model_dir):
    """A loaded model with every weight moved off its initial value, as training would."""
    model = load_model(model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)}


def top_block(model) -> dict[str, torch.nn.Parameter]:
    """The top block's parameters, by their names in the whole model."""
    ids = {id(p) for p in decoder_blocks(model)[-1].parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in ids}


def forgotten(model_dir, seed=0, **settings):
    """(model after forgetting its top block, its parameters before)."""
    model = trained_looking(model_dir)
    before = snapshot(model)
    forget(model, ForgetParams(**{"blocks": 1, **settings}), seed=seed)
    return model, before


# --- what each op touches --------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("op", CHANGING_OPS)
def test_each_op_changes_the_top_block_and_nothing_else(model_dirs, arch, op):
    model, before = forgotten(model_dirs[arch], op=op)
    top = top_block(model)
    for name, parameter in model.named_parameters(remove_duplicate=False):
        changed = not torch.equal(parameter, before[name])
        if name not in top:
            assert not changed, name  # embeddings, tied head, final norm, lower blocks: bit-identical
        elif op != "magnitude_zero" or parameter.dim() == 2:
            assert changed, name
        else:
            assert not changed, name  # magnitude_zero leaves biases and norms alone
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # still tied


@pytest.mark.parametrize("op", CHANGING_OPS)
def test_forgetting_every_block_still_spares_embeddings_and_final_norm(model_dirs, op):
    model = trained_looking(model_dirs["llama"])
    before = snapshot(model)
    forget(model, ForgetParams(op=op, blocks=2), seed=0)
    outside = [name for name in before if not name.startswith("model.layers.")]
    assert set(outside) == {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}
    assert all(torch.equal(model.get_parameter(name), before[name]) for name in outside)
    assert all(not torch.equal(model.get_parameter(name), before[name])
               for name in before if name.startswith("model.layers.") and name.endswith("proj.weight"))


@pytest.mark.parametrize("arch", ARCHS)
def test_none_and_zero_blocks_change_nothing(model_dirs, arch):
    for settings in ({"op": "none"}, {"op": "reset_top", "blocks": 0}, {"op": "magnitude_zero", "blocks": 0}):
        model, before = forgotten(model_dirs[arch], **settings)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters(remove_duplicate=False))


# --- each op does what it says ---------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_reset_top_reinitialises_with_the_models_own_init(model_dirs, arch):
    model, _ = forgotten(model_dirs[arch], op="reset_top")
    std = model.config.initializer_range
    for name, parameter in top_block(model).items():
        if parameter.dim() == 1:  # norms back to 1, biases back to 0 (they were moved off by 0.1·ε)
            assert torch.equal(parameter, torch.ones_like(parameter)) or torch.equal(parameter, torch.zeros_like(parameter)), name
        else:
            assert 0.3 * std < parameter.std().item() < 1.3 * std, name  # init scale, not the trained 0.1


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("keep", [0.25, 0.75])
def test_partial_reset_keeps_a_random_keep_fraction_and_reinitialises_the_rest(model_dirs, arch, keep):
    model, before = forgotten(model_dirs[arch], op="partial_reset", keep=keep)
    reset, _ = forgotten(model_dirs[arch], op="reset_top")  # same seed: the same fresh init values
    kept = total = 0
    for name, parameter in top_block(model).items():
        is_old, is_new = parameter == before[name], parameter == reset.get_parameter(name)
        assert (is_old | is_new).all(), name  # every entry is either the old or the fresh value
        kept, total = kept + int(is_old.sum()), total + parameter.numel()
    assert total > 5000 and abs(kept / total - keep) < 0.03


@pytest.mark.parametrize("arch", ARCHS)
def test_shrink_perturb(model_dirs, arch):
    model, before = forgotten(model_dirs[arch], op="shrink_perturb", shrink=0.4, noise=0.0)
    assert all(torch.equal(p, 0.4 * before[n]) for n, p in top_block(model).items())

    model, before = forgotten(model_dirs[arch], op="shrink_perturb", shrink=0.4, noise=0.05)
    residual = torch.cat([(p - 0.4 * before[n]).flatten() / 0.05 for n, p in top_block(model).items()])
    assert abs(residual.mean().item()) < 0.05 and abs(residual.std().item() - 1) < 0.05  # ε ~ N(0, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_magnitude_zero_keeps_exactly_the_largest_entries_of_each_matrix(model_dirs, arch):
    model, before = forgotten(model_dirs[arch], op="magnitude_zero", keep=0.3)
    matrices = {n: p for n, p in top_block(model).items() if p.dim() == 2}
    assert len(matrices) >= 4
    for name, parameter in matrices.items():
        old, zero = before[name], parameter == 0
        assert int(zero.sum()) == parameter.numel() - round(0.3 * parameter.numel()), name
        assert torch.equal(parameter[~zero], old[~zero]), name  # survivors untouched
        assert old[~zero].abs().min() >= old[zero].abs().max(), name  # and they are the largest


# --- determinism and settings ----------------------------------------------------------------

@pytest.mark.parametrize("op", CHANGING_OPS)
def test_same_seed_same_forgetting(model_dirs, op):
    first, _ = forgotten(model_dirs["llama"], seed=3, op=op)
    second, _ = forgotten(model_dirs["llama"], seed=3, op=op)
    other, _ = forgotten(model_dirs["llama"], seed=4, op=op)
    assert all(torch.equal(p, second.get_parameter(n)) for n, p in first.named_parameters())
    differs = any(not torch.equal(p, other.get_parameter(n)) for n, p in first.named_parameters())
    assert differs == (op != "magnitude_zero")  # magnitude_zero draws nothing at random


def test_forgetting_leaves_the_callers_random_stream_alone(model_dirs):
    model = trained_looking(model_dirs["gpt2"])
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    forget(model, ForgetParams(op="partial_reset", blocks=1), seed=0)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("settings", [{"blocks": 3}, {"op": "none", "blocks": 3}])  # checked even when nothing is forgotten
def test_more_blocks_than_the_model_has_name_the_key_and_change_nothing(model_dirs, settings):
    """The one rule params.yaml cannot check (the others: tests/test_params.py)."""
    model = trained_looking(model_dirs["gpt2"])
    before = snapshot(model)
    with pytest.raises(ValueError, match="cycles.forget.blocks"):
        forget(model, ForgetParams(**{"op": "reset_top", "blocks": 1, **settings}), seed=0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters(remove_duplicate=False))


def test_every_op_params_yaml_accepts_is_implemented():
    assert FORGET_OPS == typing.get_args(ForgetOp)


# --- relearn-resistance probe ----------------------------------------------------------------

BAD = "You are stupid and I hate you, go away."
QUESTIONS = ["How do I bake bread?", "What is the capital of France?", "How do plants grow?",
             "Can you help me with my homework?", "Why is the sky blue?", "How do I tie a knot?",
             "What is a good book to read?", "How do I learn to swim?", "What should I cook tonight?",
             "Where do whales live?", "How far away is the moon?", "What is jazz?"]


@pytest.fixture(scope="module")
def probe_setup(tiny_model_dir):
    """A reference, a policy that gradient ascent taught to avoid BAD, and disjoint negatives:
    6 to train on, 3 for the attacker, 3 held out."""
    tokenizer = load_tokenizer(tiny_model_dir)
    negatives = [encode(tokenizer, f"Human: {q}\n\nAssistant:", BAD, 32, 16) for q in QUESTIONS]
    train, attack, held_out = negatives[:6], negatives[6:9], negatives[9:]
    reference = load_model(tiny_model_dir)  # a reference that has learnt BAD, as one trained on web text would
    supervised_finetune(reference, tokenizer, negatives, steps=15, batch_size=6, learning_rate=1e-2,
                        warmup_steps=0, seed=0)
    policy = copy.deepcopy(reference)
    ref_neg, _ = score(reference, train, tokenizer.pad_token_id)
    relearn(policy, tokenizer, plain(train, ref_neg),
            RelearnParams(objective="ga", steps=4, batch_size=3, learning_rate=5e-3), seed=0)
    return {"policy": policy, "reference": reference, "tokenizer": tokenizer, "attack": attack, "held_out": held_out}


def probe(setup, policy=None, **overrides):
    settings = {"steps": 3, "learning_rate": 5e-3, "seed": 0, **overrides}
    return relearn_resistance(policy or setup["policy"], setup["reference"], setup["tokenizer"],
                              setup["attack"], setup["held_out"], **settings)


def test_probe_measures_recovery_and_never_touches_the_policy(probe_setup):
    policy = probe_setup["policy"]
    before_state = snapshot(policy)
    result = probe(probe_setup)
    assert all(torch.equal(p, before_state[n]) for n, p in policy.named_parameters(remove_duplicate=False))
    assert all(p.grad is None for p in policy.parameters()) and not policy.training

    before, after = result["probe_neg_logp_delta_before"], result["probe_neg_logp_delta_after"]
    assert before < -0.1  # gradient ascent pushed the held-out negatives down ...
    assert after > before  # ... and the attack on other negatives brought them back up
    assert result["probe_recovery"] == pytest.approx((after - before) / -before)
    assert 0 < result["probe_recovery"] < 1.5  # 3 attack steps win back most of the gap, not far more


def test_probe_is_deterministic_and_more_attack_recovers_more(probe_setup):
    assert probe(probe_setup) == probe(probe_setup)
    assert probe(probe_setup, steps=6)["probe_recovery"] > probe(probe_setup, steps=1)["probe_recovery"]


def test_probe_recovery_is_nan_when_nothing_was_suppressed(probe_setup):
    result = probe(probe_setup, policy=copy.deepcopy(probe_setup["reference"]))
    assert result["probe_neg_logp_delta_before"] == 0.0
    assert result["probe_neg_logp_delta_after"] > 0 and math.isnan(result["probe_recovery"])
    with pytest.raises(ValueError, match="attack"):
        probe({**probe_setup, "attack": []})
