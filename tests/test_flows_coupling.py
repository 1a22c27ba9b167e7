"""core/flows/coupling (BHN's hypernet flows): log|det| equals autograd's, the coupling's first half passes through,
the IAF is autoregressive, a block equals its configurations alone (bayes.md §d.9 BHN 2)."""
import pytest
import torch

from core.flows import coupling

pytestmark = pytest.mark.usefixtures("float64")  # float64 for exact log-dets, restored after each test


def moved(params, seed=0, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    return [(p + scale * torch.randn(p.shape, generator=g)).detach() for p in params]


def jac_logdet(fn, x):
    k, n, d = x.shape
    jac = torch.autograd.functional.jacobian(lambda v: fn(v)[0], x)
    blocks = torch.stack([torch.stack([jac[i, j, :, i, j, :] for j in range(n)]) for i in range(k)])
    return torch.linalg.slogdet(blocks)[1], blocks


LAYERS = {
    "coupling": (lambda d, s: coupling.init_coupling(d, 7, s, dtype=torch.float64), coupling.coupling_forward),
    "iaf": (lambda d, s: coupling.init_iaf(d, 16, s, dtype=torch.float64), coupling.iaf_forward),
    "linear": (lambda d, s: coupling.init_linear(d, s, dtype=torch.float64), coupling.linear_forward),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dim", [2, 5])
def test_logdet_equals_autograd(name, dim):
    init, fwd = LAYERS[name]
    params = moved(init(dim, [1, 2]))
    x = torch.randn(2, 8, dim, generator=torch.Generator().manual_seed(1))
    ours = fwd(params, x)[1]
    ref, jac = jac_logdet(lambda v: fwd(params, v), x)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    upper = torch.triu(torch.ones(dim, dim, dtype=torch.bool), 1)
    if name == "coupling":  # y1 = x1; y2 depends on x1 and x2 (block triangular)
        d1 = dim // 2
        assert torch.equal(fwd(params, x)[0][..., :d1], x[..., :d1])
        assert jac[..., :d1, d1:].abs().max() == 0 and jac[..., d1:, :d1].abs().min() > 0
    if name == "iaf":
        assert jac[..., upper].abs().max() == 0 and (jac.abs().amax(1)[..., ~upper] > 0).all()  # some point sees each (ReLU)


def test_init_is_bhns():
    """Coupling and IAF at init ~ identity with scale exp(0) + 0.001; linear flow scale exp(-7) + 0.001."""
    x = torch.randn(1, 4, 4)
    y, ld = coupling.coupling_forward(coupling.init_coupling(4, 5, [0], dtype=torch.float64), x)
    assert torch.allclose(y[..., 2:], 1.001 * x[..., 2:], atol=1e-6) and torch.allclose(ld, torch.full((1, 4), 2 * torch.log(torch.tensor(1.001))), atol=1e-6)
    y, ld = coupling.iaf_forward(coupling.init_iaf(4, 8, [0], dtype=torch.float64), x)  # std = exp(~0) + 0.001
    assert torch.allclose(y, 1.001 * x, atol=1e-5) and torch.allclose(ld, torch.full((1, 4), 4 * torch.log(torch.tensor(1.001))), atol=1e-5)
    w, b = coupling.init_linear(3, [0], dtype=torch.float64)
    y, ld = coupling.linear_forward([w, b], x[..., :3])
    assert abs(w.mean().item() + 7) < 0.05 and torch.allclose(ld, torch.log(torch.exp(w) + 0.001).sum().expand(1, 4))


def test_block_equals_configurations_alone_and_flip():
    x = torch.randn(6, 4)
    block = coupling.init_iaf(4, 8, [3, 4], dtype=torch.float64)
    for k, s in enumerate([3, 4]):
        alone = coupling.init_iaf(4, 8, [s], dtype=torch.float64)
        assert all(torch.equal(a[0], b[k]) for a, b in zip(alone, block))
    assert torch.equal(coupling.flip(x), x[:, [3, 2, 1, 0]])
