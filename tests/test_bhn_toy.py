"""The BHN toys (docs bayes.md §d.5, §d.9 BHN 1): the closed-form linear posterior, the product net's grid posterior,
KL(q‖p) from samples, and hypernets fitted to them (toy_examples/hypernet_trainer.py simple_test, mlp_hmc.py)."""
from __future__ import annotations

import math

import pytest
import torch

from core.bhn import toy

torch.set_num_threads(1)


def _gauss_kl(m0, c0, m1, c1):
    """KL(N(m0, c0) ‖ N(m1, c1))."""
    p1 = torch.linalg.inv(c1)
    d = len(m0)
    return float(0.5 * (torch.trace(p1 @ c0) + (m1 - m0) @ p1 @ (m1 - m0) - d + torch.logdet(c1) - torch.logdet(c0)))


def test_likelihoods_are_gaussian_log_densities():
    for problem in (toy.linear_problem(0), toy.product_problem(0)):
        theta = torch.randn(6, problem.dim, dtype=torch.float64)
        if problem.name == "linear":
            mean = theta @ problem.x.T
        else:  # prod_net_pred with c = 0: y ~ N(a b x, 1)
            mean = (theta[:, 0] * theta[:, 1])[:, None] * problem.x[:, 0]
        ref = torch.distributions.Normal(mean, 1.0).log_prob(problem.y).sum(-1)
        assert torch.allclose(toy.log_likelihood(problem, theta), ref, rtol=1e-10, atol=1e-8)
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(theta).sum(-1)
        assert torch.allclose(toy.log_joint(problem, theta), ref + prior, rtol=1e-10, atol=1e-8)


def test_linear_problem_as_the_reference():
    problem = toy.linear_problem(3)
    assert problem.x.shape == (1000, 5) and problem.y.shape == (1000,) and problem.dim == 5
    resid = problem.y - problem.x @ problem.theta0
    assert abs(float(resid.std()) - 1) < 0.1  # unit noise


def test_closed_form_is_the_posterior():
    """μ is the log joint's maximiser and −Σ⁻¹ its Hessian (the log joint is quadratic: the posterior is N(μ, Σ))."""
    problem = toy.linear_problem(1)
    mean, cov = toy.linear_posterior(problem)
    theta = mean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(toy.log_joint(problem, theta[None])[0], theta)
    assert float(grad.abs().max()) < 1e-8
    hess = torch.autograd.functional.hessian(lambda t: toy.log_joint(problem, t[None])[0], mean)
    assert torch.allclose(hess, -torch.linalg.inv(cov), rtol=1e-8)


def _linear_2d(seed=0, n=20):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    theta0 = torch.tensor([0.7, -0.4], dtype=torch.float64)
    return toy.Problem("linear", x, x @ theta0 + torch.randn(n, generator=gen, dtype=torch.float64), theta0)


def test_grid_posterior_on_a_gaussian():
    """On a 2-D linear problem the grid's moments and evidence equal the closed form."""
    problem = _linear_2d()
    grid = toy.grid_posterior(problem, lim=3.0, n=600)
    mean, cov = toy.linear_posterior(problem)
    gm, gc = grid.moments()
    assert torch.allclose(gm, mean, atol=1e-4) and torch.allclose(gc, cov, atol=1e-4)
    evidence = torch.distributions.MultivariateNormal(
        torch.zeros(len(problem.y), dtype=torch.float64), problem.x @ problem.x.T + torch.eye(len(problem.y), dtype=torch.float64))
    assert grid.log_z == pytest.approx(float(evidence.log_prob(problem.y)), abs=1e-4)
    assert float(grid.mass().sum()) == pytest.approx(1.0)


def test_product_grid_is_two_mirrored_branches():
    problem = toy.product_problem(0)
    grid = toy.grid_posterior(problem)
    assert grid.p_a_positive() == pytest.approx(0.5, abs=1e-9)
    p = torch.exp(grid.log_p)
    assert torch.allclose(p, p.flip(0).flip(1))  # (a, b) -> (-a, -b)
    i, j = divmod(int(p.argmax()), p.shape[1])
    a, b = float(grid.a[i]), float(grid.b[j])
    assert a * b == pytest.approx(float(problem.x[:, 0] @ problem.y / (problem.x[:, 0] @ problem.x[:, 0])), abs=0.1)


def test_kl_from_samples():
    problem = _linear_2d()
    grid = toy.grid_posterior(problem, lim=3.0, n=600)
    mean, cov = toy.linear_posterior(problem)
    gen = torch.Generator().manual_seed(0)
    exact = torch.distributions.MultivariateNormal(mean, cov)
    theta = mean + torch.randn(1000, 2, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    assert toy.kl_q_p(problem, theta, exact.log_prob(theta), grid.log_z) == pytest.approx(0.0, abs=1e-4)
    m_q = mean + torch.tensor([0.1, -0.05], dtype=torch.float64)
    c_q = torch.diag(torch.diagonal(cov)) * 0.7
    q = torch.distributions.MultivariateNormal(m_q, c_q)
    theta = q.sample((200000,))
    got = toy.kl_q_p(problem, theta, q.log_prob(theta), grid.log_z)
    assert got == pytest.approx(_gauss_kl(m_q, c_q, mean, cov), abs=0.01)
    metrics = toy.toy_metrics(problem, theta, q.log_prob(theta))  # linear: the closed-form errors
    assert metrics["mean_err"] == pytest.approx(float(torch.linalg.norm(m_q - mean) / torch.linalg.norm(mean)), abs=0.01)


def test_map_sits_on_one_branch():
    problem = toy.product_problem(0)
    fit = toy.fit_toy(problem, "map", 600, seed=0, lr=1e-2)
    a, b = fit.point.tolist()
    assert fit.metrics["p_a_pos"] in (0.0, 1.0) and "kl" not in fit.metrics
    assert a * b == pytest.approx(1.0, abs=0.25) and a * b > 0


def test_mean_field_sits_on_one_branch():
    """A mean-field Gaussian cannot straddle the two branches: P(a > 0) ≈ 0 or 1, and KL ≥ log 2 − slack."""
    problem = toy.product_problem(0)
    fit = toy.fit_toy(problem, "mean-field", 1200, seed=0, lr=2e-2, samples=32, eval_samples=5000)
    m = fit.metrics
    assert m["p_a_pos"] < 0.05 or m["p_a_pos"] > 0.95
    assert m["p_a_pos_true"] == pytest.approx(0.5, abs=1e-9)
    assert m["kl"] > math.log(2) - 0.05 and math.isfinite(m["elbo"])


def test_linear_hypernet_reaches_the_closed_form():
    """BHN check 1 (hypernet_trainer.simple_test): the linear hypernet θ = Wε + b on D = 5, N = 1,000 Bayesian linear
    regression: mean and covariance within 5 % (relative) of the closed form."""
    problem = toy.linear_problem(0)
    fit = toy.fit_toy(problem, "linear", 2000, seed=0, lr=3e-2, samples=512, eval_samples=100000)
    assert fit.metrics["mean_err"] < 0.05
    assert fit.metrics["cov_err"] < 0.05
    with pytest.raises(ValueError, match="unknown posterior family"):
        toy.fit_toy(problem, "gaussian", 1, seed=0)


def test_sample_histogram_matches_the_grid_density():
    problem = _linear_2d()
    grid = toy.grid_posterior(problem, lim=3.0, n=60)
    mean, cov = toy.linear_posterior(problem)
    theta = torch.distributions.MultivariateNormal(mean, cov).sample((400000,))
    hist = toy.sample_histogram(theta, grid)
    assert float(hist.sum() * grid.area) == pytest.approx(1.0, abs=1e-3)
    assert float((hist - torch.exp(grid.log_p)).abs().sum() * grid.area) < 0.05  # total variation of the binned draws


# ---------------------------------------------------------------- tempering (AVO, Huang et al. 2018) and the init scale


def test_likelihood_weight_schedule():
    """v(t) = min(1, 1e-3 + t / ramp); off (ramp 0) = 1; in fit_toy the ramp is temper·steps counted over all phases."""
    from core.bhn import train as bt

    assert bt.likelihood_weight(0, 100) == pytest.approx(1e-3)
    assert bt.likelihood_weight(50, 100) == pytest.approx(0.501)
    assert bt.likelihood_weight(99, 100) == pytest.approx(0.991)
    assert bt.likelihood_weight(100, 100) == 1.0 and bt.likelihood_weight(5000, 100) == 1.0
    assert bt.likelihood_weight(7, 0) == 1.0
    fit = toy.fit_toy(toy.product_problem(0), "mean-field", 40, seed=0, temper=0.5, record_every=1, eval_samples=100)
    weights = {h["step"]: h["likelihood_weight"] for h in fit.history}
    assert len(weights) == 40  # phases 20 / 10 / 10 steps, ramp 20 steps
    assert weights[0] == pytest.approx(1e-3) and weights[10] == pytest.approx(0.501)
    assert weights[19] == pytest.approx(0.951) and weights[25] == 1.0 and weights[39] == 1.0
    plain = toy.fit_toy(toy.product_problem(0), "mean-field", 8, seed=0, record_every=1, eval_samples=100)
    assert all("likelihood_weight" not in h for h in plain.history)


def test_tempering_off_is_the_old_fit():
    """temper = 0 and no init_log_scale (the defaults) reproduce the untempered loop bit for bit: phases on the log joint."""
    from core.bhn import hypernet as hn
    from core.bhn import train as bt

    problem, steps, seed = toy.product_problem(1), 24, 1
    fit = toy.fit_toy(problem, "realnvp", steps, seed, flow_hidden=16, eval_samples=500)
    torch.manual_seed(seed)
    ref = hn.init_hypernet(2, posterior="realnvp", coupling=4, seed=seed, flow_hidden=16).to(torch.float64)
    for i, (n, rate) in enumerate([(12, 1e-3), (6, 1e-4), (6, 1e-5)]):
        bt.fit_hypernet(ref, lambda th: toy.log_joint(problem, th), n, rate, 64, seed + 1000 * i)
    for a, b in zip(fit.hypernet.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        theta, log_q = hn.hypernet_sample(ref, 500, torch.Generator().manual_seed(seed + 1))
    assert fit.metrics == toy.toy_metrics(problem, theta, log_q)


def test_init_log_scale_moves_the_linear_layer():
    """None: the reference's w ~ N(−7, 0.01²) (θ's spread ≈ 0.001); 0: the same jitter around 0 (spread ≈ 1)."""
    problem = toy.product_problem(0)
    ref = toy.fit_toy(problem, "mean-field", 0, seed=3, eval_samples=4000)
    moved = toy.fit_toy(problem, "mean-field", 0, seed=3, eval_samples=4000, init_log_scale=0.0)
    w_ref, w_moved = ref.hypernet.linear[0].detach(), moved.hypernet.linear[0].detach()
    assert float(w_ref.mean()) == pytest.approx(-7.0, abs=0.05)
    assert torch.allclose(w_moved - w_ref, torch.zeros_like(w_ref) + 7.0)
    from core.bhn import hypernet as hn

    with torch.no_grad():
        spread_ref = hn.hypernet_sample(ref.hypernet, 4000, torch.Generator().manual_seed(0))[0].std(0)
        spread_moved = hn.hypernet_sample(moved.hypernet, 4000, torch.Generator().manual_seed(0))[0].std(0)
    assert float(spread_ref.max()) < 0.01 and float(spread_moved.min()) > 0.9


def test_tempered_fit_reaches_the_prior_at_small_weight():
    """With the likelihood's weight held near 0 (ramp ≫ steps: v ≤ 1.1e-3) q fits the prior N(0, I): mean 0, unit spread,
    P(a > 0) ≈ 1/2 (the symmetric start the flow carries onto both branches as v grows)."""
    from core.bhn import hypernet as hn

    problem = toy.product_problem(0)
    fit = toy.fit_toy(problem, "mean-field", 600, seed=0, lr=2e-2, samples=32, temper=1e4, init_log_scale=-1.0,
                      record_every=100, eval_samples=100)
    assert max(h["likelihood_weight"] for h in fit.history) < 1.2e-3
    with torch.no_grad():
        theta, _ = hn.hypernet_sample(fit.hypernet, 20000, torch.Generator().manual_seed(5))
    assert float(theta.mean(0).abs().max()) < 0.1
    assert torch.allclose(theta.std(0), torch.ones(2, dtype=theta.dtype), atol=0.1)
    assert 0.4 < float((theta[:, 0] > 0).double().mean()) < 0.6


def test_pipeline_passes_the_departures_only_when_set():
    """bhn-toy's configs carry temper / init_log_scale only when set (recorded sweeps keep their configs and ids), and
    the trainable hands them to fit_toy (an unset init: the reference's −7, a near-point q)."""
    from pipelines.bhn import toy as ptoy
    from tasks.bhn import toy_run

    settings = {k: s.default for k, s in ptoy.SETTINGS.items()}
    assert all("temper" not in c and "init_log_scale" not in c for c in ptoy.configs(settings))
    cpu = {**settings, **ptoy.PRESETS["cpu"]}
    assert all(c["temper"] == 0.4 and c["init_log_scale"] == 0.0 for c in ptoy.configs(cpu))
    base = dict(problem="product", posterior="mean-field", coupling=0, steps=4, lr=1e-3, samples=8, flow_hidden=8,
                eval_samples=2000, decay=True, seed=0)
    ref = toy_run(base, lambda r: None)[0]
    tempered = toy_run({**base, "temper": 0.4, "init_log_scale": 0.0}, lambda r: None)[0]
    assert ref["cov_err"] > 0.99 and tempered["cov_err"] < 0.8  # a point-like q (covariance ≈ 0) vs a unit-spread one
    assert toy_run({**base, "temper": 0.4}, lambda r: None)[0]["kl"] != ref["kl"]  # the tempered target moved q
