"""core/flows model: log|det| equals autograd's, MADE's autoregressive structure, DSF algebra, initialisation,
and a block of K equal to its configurations alone (bayes.md §d.9 NAF 1-2)."""
import math

import pytest
import torch

from core.flows import made, model, transformers
from core.flows.spec import DELTA, TRANSFORMERS, FlowSpec

pytestmark = pytest.mark.usefixtures("float64")  # float64 for exact log-dets, restored after each test


def perturbed(spec: FlowSpec, seeds: list[int], scale: float = 0.5, seed: int = 0) -> list[torch.Tensor]:
    """Float64 parameters moved away from the near-identity init (so every term of the map matters)."""
    g = torch.Generator().manual_seed(seed)
    return [(p + scale * torch.randn(p.shape, generator=g, dtype=p.dtype)).detach() for p in
            model.init_block(spec, seeds, dtype=torch.float64)]


def autograd_logdet(spec: FlowSpec, params: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, N) log|det| and (K, N, D, D) Jacobians of forward at every point, by torch.autograd.functional.jacobian."""
    k, n, d = x.shape
    jac = torch.autograd.functional.jacobian(lambda v: model.forward(spec, params, v)[0], x)  # (K, N, D, K, N, D)
    blocks = torch.stack([torch.stack([jac[i, j, :, i, j, :] for j in range(n)]) for i in range(k)])
    return torch.linalg.slogdet(blocks)[1], blocks


SPECS = [FlowSpec(dim=d, transformer=t, flows=f, hidden=h, hidden_layers=hl, ds_dim=3, ds_layers=dl)
         for t in TRANSFORMERS for (d, f, h, hl, dl) in [(1, 1, 4, 1, 1), (2, 2, 8, 1, 2), (3, 1, 9, 2, 1), (5, 2, 10, 1, 2)]]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.transformer}-D{s.dim}-L{s.ds_layers}")
def test_full_stack_logdet_equals_autograd(spec):
    params = perturbed(spec, [1, 2, 3])
    x = torch.randn(3, 4, spec.dim, generator=torch.Generator().manual_seed(1))
    ours = model.forward(spec, params, x)[1]
    ref, _ = autograd_logdet(spec, params, x)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()


def _random_transformer_params(kind: str, shape, d: int, layers: int, g):
    if kind in ("maf", "affine-gated"):
        return torch.randn(*shape, 2, generator=g), []
    if kind == "dsf":
        return 2 * torch.randn(*shape, 3 * d * layers, generator=g), []
    dims = [(1 if i == 0 else d, 1 if i == layers - 1 else d) for i in range(layers)]
    p = 2 * torch.randn(*shape, sum(3 * d + i for i, _ in dims), generator=g)
    uw = [t for i, o in dims for t in (torch.randn(shape[0], d, i, generator=g), torch.randn(shape[0], o, d, generator=g))]
    return p, uw


@pytest.mark.parametrize("kind,layers", [("maf", 1), ("affine-gated", 1), ("dsf", 1), ("dsf", 3), ("ddsf", 1), ("ddsf", 3)])
def test_each_transformer_logdet_equals_autograd(kind, layers):
    """Elementwise transformers alone, with random parameters: sum of log dy_i/dx_i from autograd."""
    g = torch.Generator().manual_seed(2)
    k, n, dim, d = 2, 6, 3, 4
    p, uw = _random_transformer_params(kind, (k, n, dim), d, layers, g)
    x = 3 * torch.randn(k, n, dim, generator=g)

    def run(v):
        if kind == "maf":
            return transformers.maf(v, p)
        if kind == "affine-gated":
            return transformers.affine_gated(v, p)
        if kind == "dsf":
            return transformers.dsf(v, p, layers)
        return transformers.ddsf(v, p, uw, d, layers)
    x.requires_grad_()
    y, logdet = run(x)
    diag = torch.autograd.grad(y.sum(), x)[0]  # elementwise map: the Jacobian is diagonal
    assert (diag > 0).all()
    assert torch.allclose(logdet, diag.log().sum(-1), atol=1e-8, rtol=0)


@pytest.mark.parametrize("transformer", TRANSFORMERS)
def test_made_jacobian_is_triangular_and_the_flip_reverses_it(transformer):
    """One flow, no flip: z_i depends on x_<i and x_i only, on each of x_<i (dense lower triangle); with the flip the
    rows come reversed; with the reversed order the triangle is the upper one."""
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
    base = FlowSpec(dim=4, transformer=transformer, flows=1, hidden=12, ds_dim=3, flip=False, final_linear=False)
    params = perturbed(base, [4, 5])
    _, jac = autograd_logdet(base, params, x)
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
    assert jac[..., upper].abs().max() == 0
    assert (jac[..., ~upper].abs() > 1e-9).all()  # every allowed dependence is there
    flipped = FlowSpec(**{**base.__dict__, "flip": True})
    _, jac_f = autograd_logdet(flipped, params, x)
    assert torch.equal(jac_f, jac.flip(-2))
    rev = made.masks(4, 12, 1, base.channels, order=(3, 2, 1, 0), dtype=torch.float64)
    out = made.made_forward(params[:6], rev, x).view(2, 3, 4, -1)
    dep = torch.autograd.functional.jacobian(lambda v: made.made_forward(params[:6], rev, v), x)
    dep = dep.view(2, 3, 4, base.channels, 2, 3, 4)[:, 0, :, :, :, 0, :].abs().amax(dim=(2, 3))  # (K, out feature, in)
    assert out.shape[-2] == 4 and dep[:, ~upper].max() == 0 and (dep[:, upper] > 0).all()  # z_j sees x_>j only


def test_spec_order_reverses_the_autoregressive_direction():
    """FlowSpec(order=(2, 1, 0)): z_i depends on x_i and x_>i only (upper triangle), every allowed dependence there."""
    spec = FlowSpec(dim=3, transformer="dsf", flows=1, hidden=9, ds_dim=3, flip=False, final_linear=False, order=(2, 1, 0))
    params = perturbed(spec, [0])
    _, jac = autograd_logdet(spec, params, torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(2)))
    lower = torch.tril(torch.ones(3, 3, dtype=torch.bool), -1)
    assert jac[..., lower].abs().max() == 0 and (jac[..., ~lower].abs() > 1e-9).all()
    with pytest.raises(ValueError):
        FlowSpec(dim=3, order=(0, 0, 1))


def test_random_order_is_a_seeded_uniform_permutation():
    """torchkit's fixed_order=False (get_rank(dx, dx)): a permutation of range(dim), from the seed alone, both D = 2
    orders drawn about equally often (N1's IAF_DSF)."""
    assert made.random_order(5, 3) == made.random_order(5, 3) and sorted(made.random_order(5, 3)) == list(range(5))
    draws = [made.random_order(2, s) for s in range(200)]
    assert 70 <= draws.count((1, 0)) <= 130 and draws.count((0, 1)) + draws.count((1, 0)) == 200
    assert len({made.random_order(6, s) for s in range(50)}) > 40


def test_made_masks_match_degrees():
    """Hidden units see inputs of degree <= theirs, output j sees hidden degree < j; D = 1 gives zero masks."""
    m0, m1 = made.masks(3, 5, 1, 2, dtype=torch.float64)
    deg_h = torch.arange(5) % 2
    assert torch.equal(m0, (deg_h[None, :] >= torch.arange(3)[:, None]).double())
    expect = (torch.arange(3)[None, :] > deg_h[:, None]).double().repeat_interleave(2, dim=1)
    assert torch.equal(m1, expect) and m1[:, :2].sum() == 0 and m1[:, 4:].sum() == (deg_h < 2).sum() * 2
    assert all(m.sum() == 0 for m in made.masks(1, 5, 2, 6, dtype=torch.float64))


@pytest.mark.parametrize("transformer", TRANSFORMERS)
def test_one_dimensional_flow_is_unconditional_and_normalised(transformer):
    """D = 1 (the sine-wave posterior): a proper density on R (integrates to 1 by quadrature). No final linear map: a
    DSF's image is bounded (|y| <= logit(1 - delta/2) ~ 14.5), a shrinking final scale would leave base mass outside."""
    spec = FlowSpec(dim=1, transformer=transformer, flows=2, hidden=8, ds_dim=4, final_linear=False)
    params = perturbed(spec, [0, 1], scale=0.3)
    grid = torch.linspace(-200, 200, 200001)[:, None]  # a DSF's tails can be heavy
    mass = model.log_prob(spec, params, grid).exp().sum(1) * (400 / 200000)
    assert torch.allclose(mass, torch.ones(2), atol=1e-4), mass


def _ddsf_layer_general(h, logj_prev, p, u_, w_):
    """torchkit DenseSigmoidFlow for any in_dim, written out (p = (a, b, w offsets, u offsets), every softmax and
    log-matrix-product taken, log dh/dx given): the form core.flows' one-input shortcuts must equal bit for bit."""
    d, n_in = u_.shape[-2], u_.shape[-1]
    pre_u = u_[:, None, None] + p[..., 3 * d:3 * d + n_in][..., None, :]
    pre_w = w_[:, None, None] + p[..., 2 * d:3 * d][..., None, :]
    a = transformers.softplus_d(p[..., :d] + transformers.SOFTPLUS_INV_ONE)
    pre = (torch.softmax(pre_u, -1) * h[..., None, :]).sum(-1) * a + p[..., d:2 * d]
    x_sq = (torch.softmax(pre_w, -1) * torch.sigmoid(pre)[..., None, :]).sum(-1) * (1 - DELTA) + 0.5 * DELTA
    h_new = torch.log(x_sq) - torch.log1p(-x_sq)  # before the log-det's ops, as torchkit: autograd sums x_sq's 4 grads in this order
    inner = torch.log_softmax(pre_w, -1) + (torch.nn.functional.logsigmoid(pre) + torch.nn.functional.logsigmoid(-pre)
                                            + torch.log(a))[..., None, :]
    logj = torch.logsumexp(inner[..., None] + torch.log_softmax(pre_u, -1)[..., None, :, :], -2)
    logj = logj + math.log(1 - DELTA) - (torch.log(x_sq) + torch.log1p(-x_sq))[..., None]
    return h_new, torch.logsumexp(logj[..., None] + logj_prev[..., None, :, :], -2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ddsf_one_input_shortcuts_equal_the_general_layer_bit_for_bit(dtype):
    """A DDSF stack 1 -> d -> d -> 1 (three layers; the first has one input and log dh/dx = 0): values and every
    gradient (x, p, u_, w_) of transformers.ddsf equal the general layer chained from log dh/dx = 0, exactly."""
    g = torch.Generator().manual_seed(5)
    k, n, dim, d, layers = 2, 7, 3, 4, 3
    p, uw = _random_transformer_params("ddsf", (k, n, dim), d, layers, g)
    x = 3 * torch.randn(k, n, dim, generator=g)
    leaves = [t.to(dtype).requires_grad_() for t in [x, p, *uw]]

    def general(x, p, *uw):
        h, logj, start = x[..., None], torch.zeros(x.shape + (1, 1), dtype=x.dtype), 0
        for i, (n_in, _) in enumerate([(1, d), (d, d), (d, 1)]):
            h, logj = _ddsf_layer_general(h, logj, p[..., start:start + 3 * d + n_in], uw[2 * i], uw[2 * i + 1])
            start += 3 * d + n_in
        return h[..., 0], logj[..., 0, 0].sum(-1)

    outs = [fn(*leaves) for fn in (general, lambda x, p, *uw: transformers.ddsf(x, p, list(uw), d, layers))]
    for ref, ours in zip(*outs):
        assert torch.equal(ref, ours)
    weights = torch.randn(k, n, generator=g, dtype=dtype)
    grads = [torch.autograd.grad(y.sum() + (ld * weights).sum(), leaves) for y, ld in outs]
    for ref, ours in zip(*grads):
        assert torch.equal(ref, ours)
    assert not grads[1][2].any()  # u_ of the one-input layer: softmax over one input is 1, its gradient 0 (torchkit's too)


def test_dsf_identity_with_one_unit():
    """d = 1, a = 1, b = 0, w = 1: y = logit(sigmoid(x)(1 - delta) + delta/2) ~ x, and log|det| = log(1 - delta) at 0."""
    x = torch.linspace(-5, 5, 101).view(1, 1, -1)
    p = torch.zeros(1, 1, 101, 3)
    p[..., 0] = transformers.SOFTPLUS_INV_ONE
    y, logdet = transformers.dsf(x, p[0:1].expand(1, 1, 101, 3), 1)
    sq = torch.sigmoid(x) * (1 - DELTA) + DELTA / 2
    assert torch.allclose(y, torch.log(sq / (1 - sq)), atol=1e-12)
    assert (y - x).abs().max() < 1e-3
    y0, ld0 = transformers.sigmoid_flow(torch.zeros(1, 1, 1), p[:, :, :1])
    assert y0.abs().max() < 1e-15 and abs(ld0.item() - math.log(1 - DELTA)) < 1e-15


def test_dsf_squash_keeps_saturated_inputs_finite():
    """Far in the tails sum_j w_j sigmoid(.) rounds to 0 or 1: the squash maps it to delta/2 or 1 - delta/2."""
    x = torch.tensor([[[-80.0, 80.0]]])
    p = torch.zeros(1, 1, 2, 3)
    p[..., 0] = transformers.SOFTPLUS_INV_ONE
    y, logdet = transformers.sigmoid_flow(x, p)
    edge = math.log((1 - DELTA / 2) / (DELTA / 2))
    assert torch.allclose(y, torch.tensor([[[-edge, edge]]]), atol=1e-9) and torch.isfinite(logdet).all()


def test_dsf_strictly_monotone_on_a_grid():
    g = torch.Generator().manual_seed(5)
    for layers in (1, 2):
        p = 3 * torch.randn(1, 1, 1, 3 * 6 * layers, generator=g)
        x = torch.linspace(-8, 8, 4001).view(1, -1, 1)
        y, _ = transformers.dsf(x, p.expand(1, 4001, 1, -1), layers)
        assert (y[0, 1:, 0] > y[0, :-1, 0]).all()


def test_init_is_torchkits():
    """DSF's a starts at 1 (softplus(softplus^-1(1 - delta)) + delta); the gated affine's gate bias at 2.0 (s ~ 0.88),
    its MADE output scale at 0, so the initial log|det| is exactly flows * D * log s."""
    spec = FlowSpec(dim=3, transformer="affine-gated", flows=2, hidden=6)
    params = model.init_block(spec, [0, 1], dtype=torch.float64)
    x = torch.randn(2, 5, 3)
    s = torch.sigmoid(torch.tensor(2.0)) * (1 - DELTA) + DELTA / 2
    assert torch.allclose(model.forward(spec, params, x)[1], 2 * 3 * torch.log(s).expand(2, 5), atol=1e-12)
    assert transformers.softplus_d(torch.tensor(transformers.SOFTPLUS_INV_ONE)).item() == pytest.approx(1.0, abs=1e-12)
    dspec = FlowSpec(dim=2, transformer="dsf", flows=2, hidden=8, ds_dim=4, ds_layers=2)
    dparams = model.init_block(dspec, [0], dtype=torch.float64)
    c = dparams[model.params_per_flow(dspec) - 1][0, 0]  # out_to_dsparams bias of flow 0
    assert torch.all(c[:4] == transformers.SOFTPLUS_INV_ONE) and torch.all(c[12:16] == transformers.SOFTPLUS_INV_ONE)
    assert c[4:12].abs().sum() == 0 and c[16:].abs().sum() == 0
    z, _ = model.forward(dspec, dparams, torch.randn(1, 50, 2))  # a ~ 1, b ~ 0: each flow ~ the identity


def test_block_equals_configurations_alone():
    spec = FlowSpec(dim=3, transformer="ddsf", flows=2, hidden=9, ds_dim=3, ds_layers=2)
    block = model.init_block(spec, [11, 12, 13], dtype=torch.float64)
    x = torch.randn(7, 3)
    lp = model.log_prob(spec, block, x)
    for k, seed in enumerate([11, 12, 13]):
        alone = model.init_block(spec, [seed], dtype=torch.float64)
        assert all(torch.equal(a[0], b[k]) for a, b in zip(alone, block))
        assert torch.allclose(model.log_prob(spec, alone, x)[0], lp[k], atol=1e-12, rtol=0)
    assert not torch.allclose(lp[0], lp[1])  # different seeds, different models


def test_sample_log_q_is_the_change_of_variables():
    """log q(z) = log N(eps) - log|det dz/deps|, and the same eps from the same generator."""
    spec = FlowSpec(dim=2, transformer="dsf", flows=2, hidden=8, ds_dim=3)
    params = perturbed(spec, [0, 1], scale=0.3)
    z, log_q = model.sample(spec, params, 5, torch.Generator().manual_seed(9))
    eps = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(9))
    ref, _ = autograd_logdet(spec, params, eps)
    assert torch.allclose(z, model.forward(spec, params, eps)[0])
    assert torch.allclose(log_q, -0.5 * (eps ** 2).sum(-1) - math.log(2 * math.pi) - ref, atol=1e-9)


@pytest.mark.parametrize("transformer", TRANSFORMERS)
def test_context_conditioned_logdet_and_dependence(transformer):
    """cMADE with a context (K, N, c): log|det dz/dx| still equals autograd's, and z depends on the context."""
    spec = FlowSpec(dim=3, transformer=transformer, flows=2, hidden=9, ds_dim=3, context=4)
    params = perturbed(spec, [1, 2])
    g = torch.Generator().manual_seed(6)
    x, ctx = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 4, generator=g)
    jac = torch.autograd.functional.jacobian(lambda v: model.forward(spec, params, v, ctx)[0], x)
    blocks = torch.stack([torch.stack([jac[i, j, :, i, j, :] for j in range(4)]) for i in range(2)])
    assert torch.allclose(model.forward(spec, params, x, ctx)[1], torch.linalg.slogdet(blocks)[1], atol=1e-5, rtol=0)
    assert (model.forward(spec, params, x, ctx)[0] - model.forward(spec, params, x, 2 * ctx)[0]).abs().min() > 0
    with pytest.raises(ValueError):
        model.forward(FlowSpec(dim=3, transformer=transformer), model.init_block(FlowSpec(dim=3, transformer=transformer), [0]), x[:1], ctx[:1])


def test_context_of_ones_is_scale_and_bias_summed():
    """context = 1 fed ones (torchkit's sampling) computes the context-free flow with g + Ws and b + Wb."""
    with_ctx = FlowSpec(dim=3, transformer="dsf", flows=2, hidden=9, ds_dim=3, context=1)
    plain = FlowSpec(**{**with_ctx.__dict__, "context": 0})
    params = perturbed(with_ctx, [3, 4])
    summed, per = [], 5 * (with_ctx.hidden_layers + 1)
    for f in range(with_ctx.flows):
        p = params[f * model.params_per_flow(with_ctx):(f + 1) * model.params_per_flow(with_ctx)]
        for i in range(0, per, 5):
            v, gs, bs, ws, wb = p[i:i + 5]
            summed += [v, gs + ws, bs + wb]
        summed += p[per:]
    summed += params[with_ctx.flows * model.params_per_flow(with_ctx):]
    x = torch.randn(2, 5, 3)
    a, b = model.forward(with_ctx, params, x), model.forward(plain, summed, x)
    assert torch.allclose(a[0], b[0], atol=1e-12) and torch.allclose(a[1], b[1], atol=1e-12)
    ones = model.forward(with_ctx, params, x, torch.ones(5, 1))
    assert torch.equal(ones[0], a[0])


def test_base_log_var_is_the_references_n0e_base():
    """base_log_var = 1.0: log_prob scores z under N(0, e I) (torchkit utils.log_normal(z, 0, 1.0), without its 1e-5),
    still a normalised density."""
    spec = FlowSpec(dim=1, transformer="dsf", flows=1, hidden=4, ds_dim=3, final_linear=False, base_log_var=1.0)
    params = perturbed(spec, [0], scale=0.3)
    x = torch.randn(1, 6, 1)
    z, logdet = model.forward(spec, params, x)
    ref = -z[..., 0] ** 2 / (2 * math.e) - 0.5 - 0.5 * math.log(2 * math.pi) + logdet
    assert torch.allclose(model.log_prob(spec, params, x), ref, atol=1e-12)
    grid = torch.linspace(-200, 200, 200001)[:, None]
    assert abs(model.log_prob(spec, params, grid).exp().sum().item() * (400 / 200000) - 1) < 1e-4
