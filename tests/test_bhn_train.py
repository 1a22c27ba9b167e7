"""BHN objective and training loop (bayes.md d.9 BHN item 3): the loss hand-computed on a tiny net (prior sign, KL
weight, / N, softmax clipping), norm-clip 10 then value-clip 5, KL annealing, fit equal to a loop written like
experiment_MLP_WN / utils.train_model step for step, best-valid weights restored, fit_hypernet on a Gaussian."""
from __future__ import annotations

import math

import pytest
import torch

from core.bhn import hypernet as hn
from core.bhn import models as bm
from core.bhn import objective as obj
from core.bhn.reference import train_model
from core.bhn.train import epoch_batches, fit, fit_hypernet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kl_weight_schedule():
    """utils.train_model: w = min(1, 0.001 + e / (epochs / 2)) when annealing, else 1."""
    assert obj.kl_weight(0, 10, True) == pytest.approx(0.001)
    assert obj.kl_weight(2, 10, True) == pytest.approx(0.401)
    assert obj.kl_weight(4, 10, True) == pytest.approx(0.801)
    assert obj.kl_weight(5, 10, True) == 1.0 and obj.kl_weight(9, 10, True) == 1.0
    assert obj.kl_weight(0, 10, False) == 1.0 and obj.kl_weight(3, 10, False) == 1.0


def test_clipping_is_norm_10_then_value_5():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0, 40.0]), torch.tensor([0.0])
    norm = obj.clip_gradients([a, b])
    assert norm == pytest.approx(math.hypot(3, 40))
    scale = 10 / (math.hypot(3, 40) + 1e-7)  # lasagne total_norm_constraint, then T.clip(g, -5, 5)
    assert torch.allclose(a.grad, torch.tensor([3 * scale, 5.0]))
    a.grad = torch.tensor([0.3, 0.4])  # under the norm: (almost) untouched
    obj.clip_gradients([a])
    assert torch.allclose(a.grad, torch.tensor([0.3, 0.4]) * 0.5 / (0.5 + 1e-7))


def _tiny_bhn() -> bm.BHNModel:
    spec = bm.BHNSpec(in_shape=(3,), hidden=(4,), classes=3, posterior="mean-field", coupling=0, prior_lambda=2.0)
    model = bm.init_model(spec, None, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.hypernet.linear[0].copy_(torch.randn(1, 1, 7, generator=gen) * 0.3 - 1.0)
        model.hypernet.linear[1].copy_(torch.randn(1, 1, 7, generator=gen) * 3.0)  # large g: clipped probabilities
        for p in model.nets[0].parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def test_elbo_loss_hand_computed(float64):
    model = _tiny_bhn()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2)) * 4
    n_train, w, lam = 50, 0.3, 2.0
    # by hand: one eps, g = eps (exp(W) + 0.001) + b, W = g V / ||V||
    eps = torch.randn(1, 7, generator=torch.Generator().manual_seed(7))[0]
    s = torch.exp(model.hypernet.linear[0].view(-1)) + 0.001
    g = eps * s + model.hypernet.linear[1].view(-1)
    net = model.nets[0]
    v1, v2 = net.directions
    h = torch.relu(x @ (g[:4, None] * v1 / v1.norm(dim=1, keepdim=True)).t() + net.biases[0])
    probs = torch.softmax(h @ (g[4:, None] * v2 / v2.norm(dim=1, keepdim=True)).t() + net.biases[1], -1)
    y = torch.cat([probs[:2].argmin(-1), probs[2:].argmax(-1)])
    picked = probs[torch.arange(5), y]
    assert ((picked > 0.999) | (picked < 0.001)).any(), picked  # the clip matters here
    loss, terms = obj.elbo_loss(model, x, y, n_train, w, generator=torch.Generator().manual_seed(7))
    log_lik = torch.log(probs.clamp(0.001, 0.999)[torch.arange(5), y]).mean()
    log_q = (-0.5 * eps ** 2 - 0.5 * math.log(2 * math.pi)).sum() - torch.log(s).sum()
    log_p = (-0.5 * math.log(2 * math.pi) + 0.5 * math.log(lam) - 0.5 * lam * g ** 2).sum()
    expected = -(log_lik - w * (log_q - log_p) / n_train)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert terms["kl"] == pytest.approx((log_q - log_p).item()) and terms["nll"] == pytest.approx(-log_lik.item())
    assert terms["log_p"] == pytest.approx(log_p.item()) and terms["kl_weight"] == w


def test_point_model_loss_is_clipped_nll_plus_l2(float64):
    spec = bm.BHNSpec(in_shape=(3,), hidden=(4,), classes=3, model="map", l2=1e-2)
    model = bm.init_model(spec, None, seed=0)
    with torch.no_grad():
        model.scales[0].mul_(8.0)
    x, y = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, terms = obj.elbo_loss(model, x, y, 100, 1.0)
    probs = torch.softmax(bm.logits(model, x, 1)[0], -1)
    expected = -torch.log(probs.clamp(0.001, 0.999)[torch.arange(6), y]).mean() + 1e-2 * sum(
        (p ** 2).sum() for p in model.parameters())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_epoch_batches_drop_the_tail():
    batches = epoch_batches(60, 16, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [16, 16, 16]  # range(N / bs): the last 12 dropped
    assert len(set(torch.cat(batches).tolist())) == 48
    assert [len(b) for b in epoch_batches(10, 16, torch.Generator().manual_seed(0))] == [10]


def _data(n: int = 90):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 4, 4, generator=gen)
    y = (x.reshape(n, -1)[:, :3].argmax(-1) + (torch.rand(n, generator=gen) < 0.2).long()) % 3
    return x, y


@pytest.mark.parametrize("posterior, coupling, anneal", [("mean-field", 0, True), ("realnvp", 2, False),
                                                         ("iaf", 1, True)])
def test_fit_equals_the_reference_loop_step_for_step(float64, posterior, coupling, anneal):
    x, y = _data()
    spec = bm.BHNSpec(in_shape=(4, 4), hidden=(8,), classes=3, posterior=posterior, coupling=coupling, flow_hidden=6,
                      prior_lambda=1.5)
    model = bm.init_model(spec, x[:64], seed=2)
    with torch.no_grad():  # make the KL term and the noise matter
        model.hypernet.linear[0].fill_(math.log(0.3))
    ref = train_model(model, x[:60], y[:60], x[60:], y[60:], lr0=3e-2, bs=16, epochs=4, anneal=int(anneal), seed=9,
                      v_mc=5)
    result = fit(model, spec, x[:60], y[:60], x[60:], y[60:], epochs=4, lr=3e-2, batch=16, seed=9, valid_samples=5,
                 anneal=anneal)
    assert [h["valid_acc"] for h in result.history] == ref.valid_accs
    assert result.best_epoch == ref.best_epoch
    per_epoch = [sum(ref.losses[3 * e:3 * e + 3]) / 3 for e in range(4)]
    assert [h["loss"] for h in result.history] == pytest.approx(per_epoch, rel=1e-9)
    for p, q in zip(model.parameters(), ref.model.parameters()):
        assert torch.allclose(p, q, atol=1e-10)


def test_fit_restores_the_best_validation_weights():
    x, y = _data(120)
    spec = bm.BHNSpec(in_shape=(4, 4), hidden=(8,), classes=3, model="map")
    model = bm.init_model(spec, x[:64], seed=0)
    snapshots = []
    result = fit(model, spec, x[:80], y[:80], x[80:], y[80:], epochs=8, lr=0.3, batch=8, seed=2,
                 progress=lambda e, entry: snapshots.append([p.detach().clone() for p in model.parameters()]))
    accs = [h["valid_acc"] for h in result.history]
    assert len(snapshots) == 8 and result.best_epoch == accs.index(max(accs))
    assert result.best_epoch < 7  # this seed's best is not the last epoch
    for p, q in zip(model.parameters(), snapshots[result.best_epoch]):
        assert torch.equal(p, q)


def test_ensemble_members_clip_alone():
    x, y = _data(40)
    spec = bm.BHNSpec(in_shape=(4, 4), hidden=(5,), classes=3, model="ensemble", members=2)
    model = bm.init_model(spec, x[:32], seed=0)
    alone = bm.init_model(bm.BHNSpec(in_shape=(4, 4), hidden=(5,), classes=3, model="map"), None, seed=0)
    with torch.no_grad():
        for p, q in zip(list(alone.nets[0].parameters()) + [alone.scales[0]],
                        list(model.nets[0].parameters()) + [model.scales[0]]):
            p.copy_(q)
        for v in model.nets[1].directions:  # same function, gradients x 1e4: member 2's norm dwarfs member 1's
            v.mul_(1e-4)
    fit(model, spec, x, y, None, None, epochs=1, lr=1e-2, batch=8, seed=0)
    fit(alone, alone.spec, x, y, None, None, epochs=1, lr=1e-2, batch=8, seed=0)
    assert torch.allclose(model.scales[0], alone.scales[0], atol=1e-6)


def test_fit_hypernet_recovers_a_gaussian():
    hnet = hn.init_hypernet(2, "mean-field", 0, seed=0)
    mu, sd = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    target = lambda t: torch.distributions.Normal(mu, sd).log_prob(t).sum(-1)
    fit_hypernet(hnet, target, steps=1500, lr=0.05, samples=64, seed=0)
    theta, _ = hn.hypernet_sample(hnet, 20000, torch.Generator().manual_seed(1))
    assert ((theta.mean(0) - mu).abs() < 0.15 * sd).all()  # Adam's noise at lr 0.05
    assert torch.allclose(theta.std(0), sd, rtol=0.1)


def test_linear_hypernet_recovers_a_correlated_gaussian():
    """hypernet_trainer.simple_test's theta = W eps + b: reverse KL to a Gaussian is exact in this family, so the
    fitted mean and covariance are the target's (the toy linear-Gaussian check's building block)."""
    hnet = hn.init_hypernet(3, "linear", 1, seed=0)
    mu = torch.tensor([1.0, -1.0, 0.5])
    chol = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.2, 0.7]])
    target = torch.distributions.MultivariateNormal(mu, scale_tril=chol)
    fit_hypernet(hnet, target.log_prob, steps=1500, lr=0.03, samples=64, seed=0, final_lr=3e-4)
    theta, log_q = hn.hypernet_sample(hnet, 40000, torch.Generator().manual_seed(1))
    theta = theta.detach()
    assert ((theta.mean(0) - mu).abs() < 0.05).all()
    cov = torch.cov(theta.t())
    assert torch.linalg.matrix_norm(cov - chol @ chol.t()) < 0.05 * torch.linalg.matrix_norm(chol @ chol.t())
    kl = (log_q.detach() - target.log_prob(theta)).mean()
    assert 0 <= kl < 0.005  # KL(q || p) of the fit, in nats
