"""Each objective against a hand-computed case (numbers worked out in the comments)."""
import math

import pytest
import torch

from core import objectives as obj


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_mean_nll_and_accuracy_by_hand():
    # BCE(0, y) = log 2 for any y; accuracy: preds (1, 0, 1) vs y (1, 1, 0) -> 1 of 3 right.
    assert obj.mean_nll(t([[0.0], [0.0]]), t([[1.0], [0.0]])).item() == pytest.approx(math.log(2))
    assert obj.mean_accuracy(t([[1.0], [-1.0], [2.0]]), t([[1.0], [1.0], [0.0]])).item() == pytest.approx(1 / 3)


def test_irm_penalty_by_hand_and_against_autograd():
    # grad = mean((sigmoid(f) - y) * f) = ((0.7310586 - 1) * 1 + 0.1192029 * (-2)) / 2 = -0.2536736; squared:
    logits, y = t([[1.0], [-2.0]]), t([[1.0], [0.0]])
    assert obj.irm_penalty(logits, y).item() == pytest.approx(0.0643503, abs=1e-6)
    assert obj.irm_penalty_autograd(logits, y).item() == pytest.approx(0.0643503, abs=1e-6)
    # Both stay differentiable w.r.t. the logits and agree in their gradients.
    a = t([[0.3], [-1.2], [2.0]]).requires_grad_()
    b = a.detach().clone().requires_grad_()
    yy = t([[1.0], [0.0], [0.0]])
    (ga,) = torch.autograd.grad(obj.irm_penalty(a, yy), a)
    (gb,) = torch.autograd.grad(obj.irm_penalty_autograd(b, yy), b)
    assert torch.allclose(ga, gb)


def test_vrex_penalty_two_and_three_domains():
    assert obj.vrex_penalty(t([0.2, 0.6])).item() == pytest.approx(0.16)  # (0.2 - 0.6)^2
    # pairs (1,2), (1,4), (2,4): (1 + 9 + 4) / 3 = 14/3
    assert obj.vrex_penalty(t([1.0, 2.0, 4.0])).item() == pytest.approx(14 / 3)


def test_mmrex_penalty_and_eq_5_7():
    assert obj.mmrex_penalty(t([0.2, 0.6])).item() == pytest.approx(0.4)  # |R1 - R2|
    # 3/2 * (max - mean) = 3/2 * (4 - 7/3) = 2.5
    risks = t([1.0, 2.0, 4.0])
    assert obj.mmrex_penalty(risks).item() == pytest.approx(2.5)
    # mean + w * penalty equals eq. 5.7 at the matching lambda_min (negative: extrapolation).
    for w in (0.5, 3.0, 1000.0):
        lam = obj.mmrex_lambda_min(w, 3)
        assert (risks.mean() + w * obj.mmrex_penalty(risks)).item() == pytest.approx(obj.mm_rex_objective(risks, lam).item())
    assert obj.mmrex_lambda_min(1000.0, 2) == pytest.approx(-999.5)
    # lambda_min = 0 is risk interpolation: max_e R_e.
    assert obj.mm_rex_objective(risks, 0.0).item() == pytest.approx(obj.risk_interpolation(risks).item()) == 4.0


def test_penalty_schedule_and_rescaling():
    risks, irm, norm = t([0.2, 0.6]), t([0.01, 0.03]), t(10.0)
    kw = dict(l2=0.001, penalty_weight=100.0, anneal_iters=5)
    # before the anneal step: weight 1 -> 0.4 + 0.001 * 10 + 1 * 0.16 = 0.57
    loss, pen = obj.training_loss("vrex", risks, irm, norm, step=4, **kw)
    assert loss.item() == pytest.approx(0.57) and pen.item() == pytest.approx(0.16)
    # from the anneal step: (0.4 + 0.01 + 100 * 0.16) / 100 = 0.1641
    assert obj.training_loss("vrex", risks, irm, norm, step=5, **kw)[0].item() == pytest.approx(0.1641)
    # IRM: penalty = mean of per-domain penalties = 0.02 -> (0.41 + 2) / 100
    assert obj.training_loss("irm", risks, irm, norm, step=5, **kw)[0].item() == pytest.approx(0.0241)
    # MM-REx: (0.41 + 100 * 0.4) / 100
    assert obj.training_loss("mmrex", risks, irm, norm, step=9, **kw)[0].item() == pytest.approx(0.4041)
    # ERM and the grayscale oracle ignore the penalty; RI is max risk + L2.
    assert obj.training_loss("erm", risks, irm, norm, step=9, **kw)[0].item() == pytest.approx(0.41)
    assert obj.training_loss("grayscale", risks, irm, norm, step=9, **kw)[0].item() == pytest.approx(0.41)
    assert obj.training_loss("ri", risks, irm, norm, step=9, **kw)[0].item() == pytest.approx(0.61)
    # A weight <= 1 is not a rescale: (0.41 + 0.5 * 0.16)
    low = dict(kw, penalty_weight=0.5)
    assert obj.training_loss("vrex", risks, irm, norm, step=9, **low)[0].item() == pytest.approx(0.49)


def test_per_model_vectors_broadcast():
    risks = t([[0.2, 0.6], [0.2, 0.6]])
    loss, _ = obj.training_loss(
        "vrex", risks, None, t([10.0, 10.0]), step=5, l2=t([0.001, 0.0]), penalty_weight=t([100.0, 100.0]), anneal_iters=t([5, 6])
    )
    assert loss.tolist() == pytest.approx([0.1641, 0.4 + 0.16])


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        obj.check_method("dro")
