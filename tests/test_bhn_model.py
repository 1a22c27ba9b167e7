"""BHN model side (bayes.md d.9 BHN items 2 and 4): hypernet log|det| = autograd, the flow composed as the reference
composes it, coupling 0 is a mean-field Gaussian whose KL estimate averages to the closed form, weight norm
W = g V/||V|| per unit, data-dependent init gives unit-variance pre-activations, MC prediction uses S samples."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.bhn import hypernet as hn
from core.bhn import models as bm
from core.bhn import objective as obj
from core.bhn.train import evaluate
from core.flows import coupling as cf

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturbed(hnet: hn.Hypernet, seed: int = 0, scale: float = 0.3) -> hn.Hypernet:
    """Random, far-from-init parameters (the init is ~ the identity with 1e-4 weights: a weak test)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hnet.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
        hnet.linear[0].fill_(math.log(0.7))
    return hnet


HYPERNETS = [("mean-field", 0), ("realnvp", 1), ("realnvp", 3), ("iaf", 1), ("iaf", 2), ("dsf", 1), ("dsf", 2),
             ("linear", 1)]


@pytest.mark.parametrize("posterior, coupling", HYPERNETS)
def test_hypernet_logdet_equals_autograd(float64, posterior, coupling):
    hnet = _perturbed(hn.init_hypernet(5, posterior, coupling, seed=3, flow_hidden=8))
    eps = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    _, logdet = hnet.transform(eps)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda e: hnet.transform(e[None])[0][0], eps[i])
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-8), (posterior, coupling, i)
    # log q = log N(eps; 0, noise_std^2) - log|det| (a proper density)
    theta, log_q = hn.hypernet_sample(hnet, 3, torch.Generator().manual_seed(2))
    eps2 = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    base = torch.distributions.Normal(0.0, 1.0).log_prob(eps2).sum(-1)
    assert torch.allclose(log_q, base - hnet.transform(eps2)[1])


def test_realnvp_composed_as_the_reference(float64):
    """LinearFlowLayer -> CoupledDenseLayer -> (PermuteLayer -> CoupledDenseLayer) x (coupling - 1) (BHNs.py)."""
    hnet = _perturbed(hn.init_hypernet(6, "realnvp", 3, seed=4, flow_hidden=7))
    assert hnet.perms.shape == (2, 6)
    for perm in hnet.perms:
        assert sorted(perm.tolist()) == list(range(6)) and perm.tolist() != list(range(6))
    eps = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    flows = list(hnet.flows)
    h, ld = cf.linear_forward(list(hnet.linear), eps[None])
    for c in range(3):
        if c:
            h = h[..., hnet.perms[c - 1]]
        h, ld_c = cf.coupling_forward(flows[6 * c:6 * c + 6], h)
        ld = ld + ld_c
    theta, logdet = hnet.transform(eps)
    assert torch.allclose(theta, h[0]) and torch.allclose(logdet, ld[0])


def test_iaf_layers_alternate_order(float64):
    """Each IAF layer its own order (the reference's MADE shuffles per layer): layer 2 is autoregressive in the
    reversed order, so the last output depends on the first noise only through layer 1 ... and the Jacobian is full."""
    hnet = _perturbed(hn.init_hypernet(4, "iaf", 2, seed=1, flow_hidden=12))
    eps = torch.randn(4, generator=torch.Generator().manual_seed(0))
    jac = torch.autograd.functional.jacobian(lambda e: hnet.transform(e[None])[0][0], eps)
    assert (jac.abs() > 1e-9).all()  # one order twice would leave it triangular
    one = _perturbed(hn.init_hypernet(4, "iaf", 1, seed=1, flow_hidden=12))
    jac1 = torch.autograd.functional.jacobian(lambda e: one.transform(e[None])[0][0], eps)
    assert torch.allclose(jac1.triu(1), torch.zeros(4, 4))


def test_mean_field_is_a_diagonal_gaussian_with_closed_form_kl(float64):
    hnet = hn.init_hypernet(4, "realnvp", 0, seed=0)  # coupling 0 = mean field whatever the flow name
    assert hnet.posterior == "mean-field" and len(hnet.flows) == 0
    with torch.no_grad():
        hnet.linear[0].copy_(torch.tensor([[[-1.0, 0.0, 0.5, -2.0]]]))
        hnet.linear[1].copy_(torch.tensor([[[0.3, -1.0, 2.0, 0.0]]]))
    mean = hnet.linear[1].view(-1)
    std = torch.exp(hnet.linear[0].view(-1)) + 0.001  # LinearFlowLayer: exp(W) + delta
    theta, log_q = hn.hypernet_sample(hnet, 100_000, torch.Generator().manual_seed(0))
    q = torch.distributions.Normal(mean, std)
    assert torch.allclose(log_q, q.log_prob(theta).sum(-1), atol=1e-9)
    lam = 2.0
    kl_hat = (log_q - obj.log_prior(theta, lam)).detach()
    prior = torch.distributions.Normal(torch.zeros(4), torch.full((4,), 1 / math.sqrt(lam)))
    kl = torch.distributions.kl_divergence(q, prior).sum()
    assert abs(kl_hat.mean() - kl) < 4 * kl_hat.std() / math.sqrt(len(kl_hat)), (kl_hat.mean(), kl)


def test_initial_posterior_matches_the_reference_init():
    hnet = hn.init_hypernet(300, "realnvp", 2, seed=0)
    w, b = hnet.linear[0].detach(), hnet.linear[1].detach()
    assert abs(w.mean() + 7) < 0.01 and abs(w.std() - 0.01) < 0.002  # N(-7, 0.01^2)
    assert abs(b.mean()) < 0.003 and abs(b.std() - 0.01) < 0.002  # N(0, 0.01^2)
    theta, _ = hn.hypernet_sample(hnet, 2000, torch.Generator().manual_seed(0))
    assert torch.allclose(theta.std(0).mean(), torch.tensor(math.exp(-7) + 0.001), rtol=0.05)


SPEC = dict(in_shape=(4, 4), hidden=(6, 5), classes=3)


def _explicit_logits(model: bm.BHNModel, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The primary net for one g (P,), W = g V / ||V|| per output unit, written out."""
    net, h, t = model.nets[0], x.reshape(len(x), -1), 0
    for i, (v, b) in enumerate(zip(net.directions, net.biases)):
        w = g[t:t + v.shape[0], None] * v / v.norm(dim=1, keepdim=True)
        h = h @ w.t() + b
        if i < len(net.directions) - 1:
            h = torch.relu(h)
        t += v.shape[0]
    return h


def test_weight_norm_direction_and_vectorised_samples(float64):
    model = bm.init_model(bm.BHNSpec(**SPEC, coupling=2, flow_hidden=5), torch.rand(10, 4, 4), seed=0)
    net = model.nets[0]
    for i in range(len(net.shapes)):
        assert torch.allclose(net.direction(i).norm(dim=1), torch.ones(net.shapes[i].n_out))
    assert model.n_scales == 6 + 5 + 3
    x = torch.rand(7, 4, 4)
    g = torch.randn(5, model.n_scales)
    out = bm.logits(model, x, 5, g=g)
    for s in range(5):
        assert torch.allclose(out[s], _explicit_logits(model, x, g[s]))


def test_cnn_is_the_active_learning_net(float64):
    spec = bm.BHNSpec(arch="cnn", in_shape=(28, 28), hidden=(), classes=10, coupling=1, flow_hidden=4)
    model = bm.init_model(spec, torch.rand(8, 28, 28), seed=0)
    net = model.nets[0]
    assert [s.kind for s in net.shapes] == ["conv"] * 3 + ["dense"] * 2
    assert model.n_scales == 96 + 138  # bayes.md B3: P = 96 + 138
    assert net.shapes[3].n_in == 32 * 9 * 9  # 28 -> 25 -> 22 -> 19 (4x4 valid), pool 2 -> 9
    x, g = torch.rand(3, 28, 28), torch.randn(2, model.n_scales)
    out = bm.logits(model, x, 2, g=g)
    for s in range(2):
        gs = net.split_scales(g[s])
        h = x[:, None]
        for i in range(3):
            h = torch.relu(F.conv2d(h, gs[i].view(-1, 1, 1, 1) * net.direction(i), net.biases[i]))
        h = F.max_pool2d(h, 2).flatten(1)
        h = torch.relu(h @ (gs[3][:, None] * net.direction(3)).t() + net.biases[3])
        assert torch.allclose(out[s], h @ (gs[4][:, None] * net.direction(4)).t() + net.biases[4])


@pytest.mark.parametrize("model_kind, posterior, coupling, arch", [
    ("bhn", "mean-field", 0, "mlp"), ("bhn", "realnvp", 3, "mlp"), ("bhn", "iaf", 2, "mlp"), ("bhn", "dsf", 1, "mlp"),
    ("map", "mean-field", 0, "mlp"), ("ensemble", "mean-field", 0, "mlp"), ("bhn", "realnvp", 2, "cnn")])
def test_data_dependent_init_gives_unit_variance(float64, model_kind, posterior, coupling, arch):
    """WN init (Base_BHN._init_pnet): on the init batch, every layer's pre-activation has mean 0 and variance 1 per
    unit. Checked on the first layer directly and on the logits (standardised only if every layer before is)."""
    shape = (12, 12) if arch == "cnn" else (4, 4)
    spec = bm.BHNSpec(arch=arch, in_shape=shape, hidden=(6, 5) if arch == "mlp" else (), classes=3, model=model_kind,
                      posterior=posterior, coupling=coupling, flow_hidden=5, members=2)
    x = torch.rand(100, *shape, generator=torch.Generator().manual_seed(0))
    model = bm.init_model(spec, x, seed=1)
    for k, net in enumerate(model.nets):
        g = hn.hypernet_mean_path(model.hypernet) if model.hypernet is not None else model.scales[k]
        first = net._unit_product(0, x[:64].reshape(64, -1) if arch == "mlp" else x[:64, None])
        first = first * (net.split_scales(g)[0].view(-1, 1, 1) if arch == "cnn" else net.split_scales(g)[0])
        first = first + (net.biases[0].view(-1, 1, 1) if arch == "cnn" else net.biases[0])
        axes = (0, 2, 3) if arch == "cnn" else (0,)
        assert torch.allclose(first.mean(axes), torch.zeros(first.shape[1]), atol=1e-6)
        assert torch.allclose(first.var(axes, unbiased=False), torch.ones(first.shape[1]), atol=1e-5)
        out = net(x[:64], g[None])[0]  # only x[:64] is the init batch
        assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)
        assert torch.allclose(out.var(0, unbiased=False), torch.ones(3), atol=1e-4)


def _spread(model: bm.BHNModel) -> bm.BHNModel:
    with torch.no_grad():
        model.hypernet.linear[0].fill_(math.log(0.5))
    return model


def test_sample_probs_uses_s_samples():
    model = _spread(bm.init_model(bm.BHNSpec(**SPEC, coupling=1, flow_hidden=5), torch.rand(10, 4, 4), seed=0))
    x = torch.rand(9, 4, 4)
    probs = bm.sample_probs(model, x, 6, torch.Generator().manual_seed(0))
    assert probs.shape == (6, 9, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(6, 9))
    assert (probs[1:] - probs[:1]).abs().amax(dim=(1, 2)).min() > 1e-3  # six different draws of g
    g, _ = hn.hypernet_sample(model.hypernet, 6, torch.Generator().manual_seed(0))
    assert torch.allclose(probs, torch.softmax(bm.logits(model, x, 6, g=g), -1))
    clipped = bm.sample_probs(model, x, 6, torch.Generator().manual_seed(0), clipped=True)
    assert torch.allclose(clipped, probs.clamp(0.001, 0.999))
    chunked = bm.sample_probs(model, x, 6, torch.Generator().manual_seed(0), chunk=6)
    assert torch.allclose(chunked, probs)


def test_evaluation_averages_s_samples():
    """utils.evaluate_model: argmax of the mean over n_mc samples (one sample at test is a mistake)."""
    model = _spread(bm.init_model(bm.BHNSpec(**SPEC, coupling=1, flow_hidden=5), torch.rand(10, 4, 4), seed=0))
    x, y = torch.rand(40, 4, 4), torch.randint(0, 3, (40,))
    acc, nll = evaluate(model, x, y, 9, torch.Generator().manual_seed(5))
    with torch.no_grad():
        mean = bm.sample_probs(model, x, 9, torch.Generator().manual_seed(5)).mean(0)
    assert acc == pytest.approx((mean.argmax(-1) == y).double().mean().item())
    assert nll == pytest.approx(-torch.log(mean[torch.arange(40), y]).mean().item(), rel=1e-5)


def test_baselines_sample_as_documented():
    x = torch.rand(5, 4, 4)
    mapm = bm.init_model(bm.BHNSpec(**SPEC, model="map"), torch.rand(10, 4, 4), seed=0)
    p = bm.sample_probs(mapm, x, 4)
    assert p.shape == (4, 5, 3) and torch.equal(p[0], p[3])
    drop = bm.init_model(bm.BHNSpec(**SPEC, model="mcdropout", dropout=0.5), torch.rand(10, 4, 4), seed=0).eval()
    p = bm.sample_probs(drop, x, 4, torch.Generator().manual_seed(0))
    assert (p[1:] - p[:1]).abs().amax(dim=(1, 2)).min() > 1e-4  # dropout kept at test
    ens = bm.init_model(bm.BHNSpec(**SPEC, model="ensemble", members=3), torch.rand(10, 4, 4), seed=0)
    p = bm.sample_probs(ens, x, 6)
    assert torch.equal(p[0], p[3]) and not torch.equal(p[0], p[1])
    member1 = torch.softmax(ens.nets[1](x, ens.scales[1][None])[0], -1)
    assert torch.allclose(p[4], member1)


def test_models_depend_on_their_seed_alone():
    spec = bm.BHNSpec(**SPEC, coupling=2, flow_hidden=5)
    x = torch.rand(10, 4, 4)
    a, b, c = bm.init_model(spec, x, 3), bm.init_model(spec, x, 3), bm.init_model(spec, x, 4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    from dataclasses import asdict
    import json
    assert bm.BHNSpec(**json.loads(json.dumps(asdict(spec)))) == spec


def test_sample_probs_differentiable_in_x():
    """FGS (FGS_eval.py) needs d/dx of the MC-averaged predictive's cross-entropy."""
    model = _spread(bm.init_model(bm.BHNSpec(**SPEC, coupling=1, flow_hidden=5), torch.rand(10, 4, 4), seed=0))
    x = torch.rand(3, 4, 4, requires_grad=True)
    probs = bm.sample_probs(model, x, 5, torch.Generator().manual_seed(0)).mean(0)
    torch.nn.functional.nll_loss(torch.log(probs), torch.tensor([0, 1, 2])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_linear_posterior_is_w_times_scaled_noise_plus_b(float64):
    """hypernet_trainer.simple_test: theta = W z + b, the shift after W (z = s eps, the LinearFlowLayer's scale)."""
    hnet = _perturbed(hn.init_hypernet(3, "linear", 1, seed=0))
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    s = torch.exp(hnet.linear[0].view(-1)) + 0.001
    w, b = hnet.flows[0], hnet.linear[1].view(-1)
    theta, logdet = hnet.transform(eps)
    assert torch.allclose(theta, (eps * s) @ w.t() + b)
    assert torch.allclose(logdet, (torch.log(s).sum() + torch.linalg.slogdet(w)[1]).expand(4))


def test_gelu_is_the_references_tanh_form(float64):
    """helpers.gelu_fast: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (the 'Dan' net of bayes.md B4)."""
    spec = bm.BHNSpec(in_shape=(4,), hidden=(5,), classes=3, activation="gelu", model="map")
    model = bm.init_model(spec, None, seed=0)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)) * 3
    net, g = model.nets[0], model.scales[0]
    pre = x @ (g[:5, None] * net.direction(0)).t() + net.biases[0]
    h = 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
    expected = h @ (g[5:, None] * net.direction(1)).t() + net.biases[1]
    assert torch.allclose(bm.logits(model, x, 1)[0], expected, atol=1e-12)
