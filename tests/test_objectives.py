"""Each objective against a hand-computed case (numbers worked out in the comments)."""
import math

import pytest
import torch

from core import methods
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


def test_irm_penalty_of_the_squared_loss_by_hand():
    # f = (1, 2), t = (0, 1): d/ds mean((s f - t)^2) at 1 = mean(2 (f - t) f) = (2 + 4) / 2 = 3; squared 9.
    assert obj.irm_penalty_mse(t([1.0, 2.0]), t([0.0, 1.0])).item() == pytest.approx(9.0)
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(((s * t([1.0, 2.0]) - t([0.0, 1.0])) ** 2).mean(), s)
    assert g.item() ** 2 == pytest.approx(9.0)


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


# R = (0.2, 0.6), per-domain IRM penalties (0.01, 0.03), sum ||theta||^2 = 10, l2 = 0.001 (L2 term 0.01),
# penalty weight 100 from step 5. "mean": risk term 0.4 (RI: max 0.6); "sum": 0.8 (RI: 2 * max = 1.2).
KW = dict(l2=0.001, penalty_weight=100.0, anneal_iters=5)
HAND = {
    # (method, step): (loss with mean, loss with sum)
    ("vrex", 4): (0.4 + 0.01 + 0.16, 0.8 + 0.01 + 0.16),  # weight 1 before the anneal step
    ("vrex", 5): ((0.41 + 100 * 0.16) / 100, (0.81 + 100 * 0.16) / 100),  # rescaled by the weight
    ("irm", 5): ((0.41 + 100 * 0.02) / 100, (0.81 + 100 * 0.02) / 100),  # mean of the IRM penalties: 0.02
    ("mmrex", 4): (0.41 + 0.4, 0.81 + 0.4),  # sum: R1 + R2 + |R1 - R2| = 2 max (interpolation) + L2
    ("mmrex", 9): ((0.41 + 100 * 0.4) / 100, (0.81 + 100 * 0.4) / 100),
    ("erm", 9): (0.41, 0.81),
    ("grayscale", 9): (0.41, 0.81),
    ("ri", 9): (0.61, 1.21),
}


@pytest.mark.parametrize("case", list(HAND))
def test_each_method_loss_by_hand_under_both_reductions(case):
    method, step = case
    risks, irm, norm = t([0.2, 0.6]), t([0.01, 0.03]), t(10.0)
    for reduction, expected in zip(("mean", "sum"), HAND[case]):
        loss, penalty = methods.objective(method, risks, irm, norm, step=step, reduction=reduction, **KW)
        assert loss.item() == pytest.approx(expected), (method, reduction)
    # "method": each method follows its reference code (IRM code: mean; REx code: sum).
    loss, _ = methods.objective(method, risks, irm, norm, step=step, reduction="method", **KW)
    assert loss.item() == pytest.approx(HAND[case][methods.get(method).code == "rex"])


def test_reference_code_reductions_and_registry():
    assert {name: methods.get(name).reduction for name in methods.METHODS} == {
        "erm": "mean", "irm": "mean", "vrex": "sum", "mmrex": "sum", "ri": "sum", "grayscale": "mean",
    }
    assert methods.names(penalized=True) == ["irm", "vrex", "mmrex"]
    assert methods.names(input="grayscale") == ["grayscale"]
    # The SEM code sums the IRM penalties over domains: 0.01 + 0.03.
    _, penalty = methods.objective("irm", t([0.2, 0.6]), t([0.01, 0.03]), t(0.0), step=0, reduction="sum",
                                   irm_reduction="sum", l2=0.0, penalty_weight=1.0, anneal_iters=0)
    assert penalty.item() == pytest.approx(0.04)


def test_low_and_infinite_weights():
    risks, irm, norm = t([0.2, 0.6]), t([0.01, 0.03]), t(10.0)
    # A weight <= 1 is not a rescale: 0.41 + 0.5 * 0.16
    low = dict(KW, penalty_weight=0.5)
    assert methods.objective("vrex", risks, irm, norm, step=9, reduction="mean", **low)[0].item() == pytest.approx(0.49)
    # An infinite weight (the SEM reference's reg = 0) is the penalty alone.
    inf = dict(KW, penalty_weight=math.inf, l2=0.0)
    assert methods.objective("vrex", risks, irm, norm, step=9, reduction="sum", **inf)[0].item() == pytest.approx(0.16)


def test_per_model_vectors_broadcast():
    risks = t([[0.2, 0.6], [0.2, 0.6]])
    loss, _ = methods.objective(
        "vrex", risks, None, t([10.0, 10.0]), step=5, l2=t([0.001, 0.0]), penalty_weight=t([100.0, 100.0]),
        anneal_iters=t([5, 6]), reduction="mean",
    )
    assert loss.tolist() == pytest.approx([0.1641, 0.4 + 0.16])


def test_unknown_method_and_reduction_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        methods.get("dro")
    with pytest.raises(ValueError, match="unknown risk reduction"):
        methods.resolve_reduction("irm", "median")
