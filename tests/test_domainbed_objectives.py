"""DomainBed's algorithm losses (core.methods DomainBed entries, core.objectives) against hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core import methods
from core import objectives as obj
from core.domainbed.reference import _irm_penalty


def test_scale_gradient_closed_form():
    # d/ds CE(s [1, 0], 0) = d/ds (-s + log(e^s + 1)) at s = 1 = -1 + e / (e + 1) = -0.26894
    value = obj.ce_scale_grad(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert value.item() == pytest.approx(-1 + math.e / (math.e + 1), abs=1e-6)
    torch.manual_seed(0)
    logits, y = torch.randn(9, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 4, (9,))
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(F.cross_entropy(logits * scale, y), [scale], create_graph=True)
    assert obj.ce_scale_grad(logits, y).item() == pytest.approx(expected.item(), rel=1e-12)


def test_irm_split_penalty_is_the_product_of_the_halves():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 0])
    g = lambda z, label: sum(math.exp(a) * a for a in z) / sum(math.exp(a) for a in z) - z[label]
    even = (g([1, 0], 0) + g([2, 0], 1)) / 2  # examples 0 and 2: (-0.26894 + 1.76159) / 2
    odd = (g([0, 1], 0) + g([0, 0], 0)) / 2  # examples 1 and 3: (0.73106 + 0) / 2
    assert obj.irm_split_penalty(logits, y).item() == pytest.approx(even * odd, rel=1e-12)  # 0.27282, not a square
    assert obj.irm_split_penalty(logits, y).item() == pytest.approx(_irm_penalty(logits, y).item(), rel=1e-12)
    torch.manual_seed(1)
    z, labels = torch.randn(7, 3, dtype=torch.float64), torch.randint(0, 3, (7,))  # odd size: halves of 4 and 3
    assert obj.irm_split_penalty(z, labels).item() == pytest.approx(_irm_penalty(z, labels).item(), rel=1e-12)


def test_vrex_population_variance_not_divided_by_the_weight():
    risks = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    var = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3  # 1.5556 (the CMNIST entry: 2 x sample variance 4.6667)
    assert obj.variance_penalty(risks).item() == pytest.approx(var)
    assert obj.vrex_penalty(risks).item() == pytest.approx(2 * 7 / 3)
    before, penalty, _ = methods.domainbed_objective("vrex", risks, step=9, penalty_weight=100.0, anneal_iters=10)
    after, _, _ = methods.domainbed_objective("vrex", risks, step=10, penalty_weight=100.0, anneal_iters=10)
    assert penalty.item() == pytest.approx(var)
    assert before.item() == pytest.approx(7 / 3 + var)  # weight 1 before the anneal step
    assert after.item() == pytest.approx(7 / 3 + 100 * var)  # lambda from it on, the loss not rescaled


def test_irm_objective_and_per_model_weights():
    risks = torch.tensor([[1.0, 3.0], [2.0, 2.0]], dtype=torch.float64)  # two models of a block
    irm = torch.tensor([[0.5, 0.1], [0.2, 0.4]], dtype=torch.float64)
    loss, penalty, _ = methods.domainbed_objective("irm", risks, irm, step=5, penalty_weight=torch.tensor([10.0, 10.0]),
                                                   anneal_iters=torch.tensor([5, 6]))
    assert penalty.tolist() == pytest.approx([0.3, 0.3])
    assert loss.tolist() == pytest.approx([2 + 10 * 0.3, 2 + 1 * 0.3])  # model 2 still before its anneal step


def test_groupdro_online_weights():
    risks = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    loss, _, q = methods.domainbed_objective("groupdro", risks, step=0, q=torch.ones(3, dtype=torch.float64), eta=0.5)
    weights = [math.exp(0.5 * r) for r in (1, 2, 3)]
    expected_q = [w / sum(weights) for w in weights]  # 0.18633, 0.30720, 0.50648
    assert q.tolist() == pytest.approx(expected_q)
    assert loss.item() == pytest.approx(sum(w * r for w, r in zip(expected_q, (1, 2, 3))))  # 2.32016
    (grad,) = torch.autograd.grad(loss, [risks])
    assert grad.tolist() == pytest.approx(expected_q)  # no gradient through the weights
    _, _, q2 = methods.domainbed_objective("groupdro", risks.detach(), step=1, q=q, eta=0.5)
    second = [a * math.exp(0.5 * r) for a, r in zip(expected_q, (1, 2, 3))]
    assert q2.tolist() == pytest.approx([s / sum(second) for s in second])  # the weights carry over


def test_erm_and_mmrex():
    risks = torch.tensor([1.0, 3.0])
    assert methods.domainbed_objective("erm", risks, step=0)[0].item() == pytest.approx(2.0)
    loss, penalty, _ = methods.domainbed_objective("mmrex", risks, step=3, penalty_weight=5.0, anneal_iters=2)
    assert penalty.item() == pytest.approx(2.0)  # m/(m-1) (max - mean) = |R1 - R2|
    assert loss.item() == pytest.approx(2.0 + 5 * 2.0)
    one = methods.domainbed_objective("mmrex", torch.tensor([0.7]), step=3, penalty_weight=5.0, anneal_iters=2)
    assert one[0].item() == pytest.approx(0.7) and one[1].item() == 0.0  # one training environment: no penalty


def test_registry_names_both_formulas():
    assert methods.get("vrex").penalty is not None and methods.domainbed("vrex").lambda_key == "vrex_lambda"
    assert methods.domainbed("irm").anneal_key == "irm_penalty_anneal_iters" and methods.domainbed("irm").resets_adam
    assert not methods.domainbed("erm").resets_adam and methods.domainbed("mmrex").ours
    with pytest.raises(ValueError, match="unknown DomainBed method"):
        methods.domainbed("ri")
