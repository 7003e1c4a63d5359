"""The objectives against hand-computed values and the identities of METHODS.md."""

import math

import pytest
import torch

from components.training.losses import (d2o_loss, dpo_loss, ga_loss, kto_undesirable_loss, npo_loss,
                                        stable_alignment_loss, weighted_mean)

ALPHA, BETA = 0.1, 0.1


def random_logps(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return -torch.rand(*shape, generator=generator) * 50


def test_d2o_matches_hand_computed_value():
    # anchors: r = (-10 - -12, -20 - -19) = (2, -1), mean 0.5; negative r = -30 - -28 = -2
    loss = d2o_loss(
        torch.tensor([[-10.0, -20.0]]), torch.tensor([[-12.0, -19.0]]),
        torch.tensor([-30.0]), torch.tensor([-28.0]), alpha=0.5, beta=2.0,
    )
    margin = 2.0 * 0.5 - 0.5 * (-2.0)  # = 2
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-margin))), rel=1e-6)


def test_d2o_is_log2_when_policy_equals_reference():
    anchors, negatives = random_logps(4, 3), random_logps(4, seed=1)
    loss = d2o_loss(anchors, anchors.clone(), negatives, negatives.clone(), ALPHA, BETA)
    assert loss.shape == (4,)
    assert torch.allclose(loss, torch.full((4,), math.log(2.0)))


def test_d2o_with_beta_zero_is_half_alpha_times_npo():
    policy_neg, ref_neg = random_logps(5), random_logps(5, seed=2)
    anchors = random_logps(5, 3, seed=3)
    d2o = d2o_loss(anchors, random_logps(5, 3, seed=4), policy_neg, ref_neg, alpha=0.3, beta=0.0)
    npo = npo_loss(policy_neg, ref_neg, beta=0.3)
    assert torch.allclose(d2o, 0.3 / 2 * npo, atol=1e-6)


def test_d2o_with_one_anchor_and_equal_weights_is_dpo_with_anchor_as_chosen():
    pa, ra, pn, rn = random_logps(6, 1), random_logps(6, 1, seed=5), random_logps(6, seed=6), random_logps(6, seed=7)
    d2o = d2o_loss(pa, ra, pn, rn, alpha=0.2, beta=0.2)
    dpo = dpo_loss(pa[:, 0], ra[:, 0], pn, rn, beta=0.2)
    assert torch.allclose(d2o, dpo, atol=1e-6)


def test_d2o_never_exceeds_mean_instance_level_dpo():
    """Jensen: averaging anchors inside σ bounds D2O by the mean per-anchor DPO loss."""
    pa, ra, pn, rn = random_logps(64, 7), random_logps(64, 7, seed=8), random_logps(64, seed=9), random_logps(64, seed=10)
    d2o = d2o_loss(pa, ra, pn, rn, BETA, BETA)
    per_anchor_dpo = torch.stack([dpo_loss(pa[:, k], ra[:, k], pn, rn, BETA) for k in range(7)], dim=-1)
    assert torch.all(d2o <= per_anchor_dpo.mean(-1) + 1e-6)
    assert torch.any(d2o < per_anchor_dpo.mean(-1) - 1e-4)  # strict somewhere: the bound is not trivial


def test_d2o_masked_anchors_are_ignored():
    pa, ra, pn, rn = random_logps(3, 4), random_logps(3, 4, seed=11), random_logps(3, seed=12), random_logps(3, seed=13)
    mask = torch.tensor([[True, True, False, False]] * 3)
    masked = d2o_loss(pa, ra, pn, rn, ALPHA, BETA, anchor_mask=mask)
    assert torch.allclose(masked, d2o_loss(pa[:, :2], ra[:, :2], pn, rn, ALPHA, BETA))
    garbage = pa.clone()
    garbage[:, 2:] = 1e6  # dropped anchors may hold anything
    assert torch.allclose(masked, d2o_loss(garbage, ra, pn, rn, ALPHA, BETA, anchor_mask=mask))


def test_d2o_row_without_anchors_keeps_its_negative_term():
    pa, ra = random_logps(1, 2), random_logps(1, 2, seed=14)
    loss = d2o_loss(pa, ra, torch.tensor([-5.0]), torch.tensor([-4.0]), alpha=1.0, beta=1.0,
                    anchor_mask=torch.zeros(1, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))), rel=1e-6)


def test_d2o_gradient_pushes_negative_down_and_anchors_up():
    pa = random_logps(2, 3).requires_grad_()
    pn = random_logps(2, seed=15).requires_grad_()
    d2o_loss(pa, pa.detach().clone(), pn, pn.detach().clone(), ALPHA, BETA).sum().backward()
    assert torch.all(pn.grad > 0)   # descending the loss lowers log π(y_l)
    assert torch.all(pa.grad < 0)   # and raises the anchors


@pytest.mark.parametrize("loss_fn", ["d2o", "dpo", "npo", "kto"])
def test_no_gradient_reaches_reference_logps(loss_fn):
    policy = random_logps(3, 2).requires_grad_()
    ref = random_logps(3, 2, seed=16).requires_grad_()
    losses = {
        "d2o": lambda: d2o_loss(policy, ref, policy[:, 0], ref[:, 0], ALPHA, BETA),
        "dpo": lambda: dpo_loss(policy[:, 0], ref[:, 0], policy[:, 1], ref[:, 1], BETA),
        "npo": lambda: npo_loss(policy[:, 0], ref[:, 0], BETA),
        "kto": lambda: kto_undesirable_loss(policy[:, 0], ref[:, 0], BETA, torch.tensor(0.0)),
    }
    losses[loss_fn]().sum().backward()
    assert ref.grad is None
    assert policy.grad is not None and policy.grad.abs().sum() > 0


def test_npo_tends_to_gradient_ascent_for_small_beta():
    policy = random_logps(4).requires_grad_()
    ref = random_logps(4, seed=17)
    npo_loss(policy, ref, beta=1e-6).sum().backward()
    npo_grad = policy.grad.clone()
    policy.grad = None
    ga_loss(policy).sum().backward()
    assert torch.allclose(npo_grad, policy.grad, atol=1e-3)


def test_kto_undesirable_hand_computed():
    loss = kto_undesirable_loss(torch.tensor([-3.0]), torch.tensor([-1.0]), beta=0.5, z0=torch.tensor(1.0))
    assert loss.item() == pytest.approx(1 - 1 / (1 + math.exp(-0.5 * (1.0 - (-2.0)))), rel=1e-6)


def test_dpo_hand_computed():
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)


# --- per-example weights (cycles.relearn.weighting) -------------------------------------------

def test_weights_of_one_or_none_reproduce_the_plain_mean_exactly():
    losses = d2o_loss(random_logps(8, 3), random_logps(8, 3, seed=20), random_logps(8, seed=21),
                      random_logps(8, seed=22), ALPHA, BETA)
    assert torch.equal(weighted_mean(losses), losses.mean())
    assert torch.equal(weighted_mean(losses, torch.ones(8)), losses.mean())


def test_weights_scale_each_examples_loss_and_gradient():
    policy = random_logps(3).requires_grad_()
    ref = random_logps(3, seed=23)

    def gradient(weights):
        policy.grad = None
        weighted_mean(npo_loss(policy, ref, BETA), weights).backward()
        return policy.grad.clone()

    plain = gradient(None)
    weighted = gradient(torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(weighted, plain * torch.tensor([1.0, 0.5, 0.0]))
    assert weighted[2] == 0 and abs(weighted[1]) < abs(plain[1])
    loss = npo_loss(policy, ref, BETA)
    assert weighted_mean(loss, torch.tensor([1.0, 0.5, 0.0])).item() == pytest.approx(
        (loss[0] + 0.5 * loss[1]).item() / 3, rel=1e-6)


# --- Stable Alignment ---------------------------------------------------------------------------

def official_stable_alignment(nll: list[float], scores: list[float], ratio: float, margin: float, scale: float) -> float:
    """The official trainer's arithmetic (agi-templar/Stable-Alignment, alignment.py), re-typed to
    show the defect: sorted ratings indexed with *unsorted* positions."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    sorted_scores = [scores[i] for i in order]
    best = order[0]
    terms = [nll[best] - nll[i] + (sorted_scores[0] - sorted_scores[i]) / scale * margin for i in order[1:]]
    return nll[best] + ratio * max(0.0, sum(terms) / len(terms))


def test_stable_alignment_matches_the_hand_computed_formula_not_the_official_indexing():
    nll, scores = [2.0, 1.0, 1.5], [3.0, 7.0, 5.0]
    # best is response 1 (7): terms for 0 and 2, each with its own rating's margin
    by_hand = 1.0 + 0.2 * max(0.0, ((1.0 - 2.0 + 10 * (7 - 3) / 7) + (1.0 - 1.5 + 10 * (7 - 5) / 7)) / 2)
    loss = stable_alignment_loss(torch.tensor([nll]), torch.tensor([scores]), torch.ones(1, 3, dtype=torch.bool),
                                 ratio=0.2, margin=10.0, scale=7.0)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)  # 1.70714...
    assert by_hand == pytest.approx(1.7071428, rel=1e-6)
    official = official_stable_alignment(nll, scores, 0.2, 10.0, 7.0)
    assert official == pytest.approx(1.4214286, rel=1e-6) and abs(official - by_hand) > 0.25


def test_stable_alignment_ignores_padding_and_clips_the_penalty():
    nll = torch.tensor([[2.0, 1.0, 99.0], [3.0, 0.5, 0.0]])
    scores = torch.tensor([[3.0, 7.0, 1.0], [6.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    loss = stable_alignment_loss(nll, scores, mask, ratio=0.2, margin=10.0, scale=7.0)
    # row 0: the padded 99 is ignored; row 1: the best-rated (6) has the higher NLL, so its
    # penalty 3 - 0.5 + 10*4/7 is large; a best answer already far more likely clips at 0 (below)
    assert loss[0].item() == pytest.approx(1.0 + 0.2 * (1.0 - 2.0 + 40 / 7), rel=1e-6)
    assert loss[1].item() == pytest.approx(3.0 + 0.2 * (3.0 - 0.5 + 40 / 7), rel=1e-6)
    clipped = stable_alignment_loss(torch.tensor([[0.1, 9.0]]), torch.tensor([[7.0, 6.0]]),
                                    torch.ones(1, 2, dtype=torch.bool), ratio=0.2, margin=10.0, scale=7.0)
    assert clipped.item() == pytest.approx(0.1)  # 0.1 - 9 + 10/7 < 0: no penalty, plain SFT on the best


def test_a_group_of_one_is_plain_sft_on_it():
    loss = stable_alignment_loss(torch.tensor([[1.25, 0.0]]), torch.tensor([[4.0, 0.0]]),
                                 torch.tensor([[True, False]]), ratio=0.2, margin=10.0, scale=7.0)
    assert loss.item() == pytest.approx(1.25)
