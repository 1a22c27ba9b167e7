"""The BHN toys (docs bayes.md §a.2 B1, §d.5): two posteriors we know exactly, and how far a hypernet's q is from them.

- ``linear`` (``toy_examples/hypernet_trainer.py`` ``__main__`` / ``simple_test``): Bayesian linear regression, D = 5,
  N = 1,000, X ~ N(0, 1), θ₀ ~ N(0, I), y = Xθ₀ + N(0, 1); prior N(0, I), unit noise. Posterior in closed form:
  Σ = (XᵀX + I)⁻¹, μ = ΣXᵀy. The reference's hypernet is θ = Wε + b (posterior family ``linear``), Cov_q = WWᵀ.
- ``product`` (``mlp_hmc.prod_net_pred`` with the two-parameter case (a, b) of ``identity_example.py``, learning
  y = x): y = a·b·x with noise log-variance a·c·x; with c absent (c = 0) the noise is N(0, 1). Standard-normal priors
  on a and b (``make_normal_vars_pm``). N = 100 inputs x ~ N(0, 1) (the reference's data_train.csv is not in the
  repository), y = x + N(0, 1). The posterior is a ridge along the hyperbola ab ≈ 1 with two mirror branches
  (a, b) ↔ (−a, −b), so P(a > 0) = 1/2 exactly. It is evaluated on a 2-D grid (cell centres; exact up to quadrature).

Metrics: linear: ‖E_q θ − μ‖/‖μ‖ and ‖Cov_q θ − Σ‖_F/‖Σ‖_F from samples of q; product: P_q(a > 0), KL(q‖p) =
E_q[log q(θ) − log p̃(θ)] + log Z (p̃ the exact unnormalised posterior at the samples, log Z by grid quadrature), the
ELBO E_q[log p̃ − log q], and q's mean against the grid posterior's (absolute: the true mean is 0) and covariance
(relative Frobenius).

Fitting (:func:`fit_toy`): BHN-core's hypernet (``core.bhn.hypernet``: ``linear``, ``mean-field`` = coupling 0,
``realnvp``, ``iaf``, ``dsf``) trained by ``core.bhn.train.fit_hypernet`` on the full data's log joint, or ``map`` (a
point at the log joint's maximum: P(a > 0) ∈ {0, 1}, no KL).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PROBLEMS = ("linear", "product")
FAMILIES = ("map", "linear", "mean-field", "realnvp", "iaf", "dsf")
LOG_2PI = math.log(2 * math.pi)
REFERENCE_LOG_SCALE = -7.0  # the LinearFlowLayer's log-scale init mean (BHNs.py; core.flows.coupling.init_linear)


@dataclass(frozen=True)
class Problem:
    """Regression data x (N, D), y (N,), the generating θ₀, and the problem's name (``linear`` or ``product``)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    theta0: torch.Tensor

    @property
    def dim(self) -> int:
        return 2 if self.name == "product" else self.x.shape[1]


def linear_problem(seed: int, dim: int = 5, n: int = 1000) -> Problem:
    """``hypernet_trainer``'s data (float64): X ~ N(0, 1)^{N×D}, θ₀ ~ N(0, I), y = Xθ₀ + N(0, 1)."""
    gen = torch.Generator().manual_seed(int(seed))
    theta0 = torch.randn(dim, generator=gen, dtype=torch.float64)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return Problem("linear", x, x @ theta0 + torch.randn(n, generator=gen, dtype=torch.float64), theta0)


def product_problem(seed: int, n: int = 100) -> Problem:
    """Learning y = x with y = a·b·x: x ~ N(0, 1), y = x + N(0, 1) (float64; θ₀ = (1, 1), one of the ab = 1 points)."""
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return Problem("product", x, x[:, 0] + torch.randn(n, generator=gen, dtype=torch.float64),
                   torch.ones(2, dtype=torch.float64))


def make_problem(name: str, seed: int) -> Problem:
    if name == "linear":
        return linear_problem(seed)
    if name == "product":
        return product_problem(seed)
    raise ValueError(f"unknown toy problem {name!r} (choose from {', '.join(PROBLEMS)})")


def log_prior(theta: torch.Tensor) -> torch.Tensor:
    """Σ log N(θ_i; 0, 1) over the last axis."""
    return -0.5 * (theta * theta).sum(-1) - 0.5 * theta.shape[-1] * LOG_2PI


def log_likelihood(problem: Problem, theta: torch.Tensor) -> torch.Tensor:
    """Σ_n log N(y_n; f(x_n; θ), σ²(x_n; θ)) for θ (S, D) → (S,), constants included."""
    theta = theta.to(problem.x.dtype)
    x, y, n = problem.x, problem.y, len(problem.y)
    if problem.name == "linear":  # Σ (y − xθ)² = θᵀXᵀXθ − 2θᵀXᵀy + yᵀy: O(D²) per sample, the same function
        sq = ((theta @ (x.T @ x)) * theta).sum(-1) - 2 * theta @ (x.T @ y) + y @ y
    else:  # prod_net_pred: yp = a b x, log_var = a c x with c = 0 (unit noise); Σ (y − ab x)² likewise
        ab = theta[:, 0] * theta[:, 1]
        sq = ab * ab * (x[:, 0] @ x[:, 0]) - 2 * ab * (x[:, 0] @ y) + y @ y
    return -0.5 * sq - 0.5 * n * LOG_2PI


def log_joint(problem: Problem, theta: torch.Tensor) -> torch.Tensor:
    """log p(θ) + log p(y | x, θ) for θ (S, D) → (S,)."""
    theta = theta.to(problem.x.dtype)
    return log_prior(theta) + log_likelihood(problem, theta)


def linear_posterior(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form (μ, Σ): Σ = (XᵀX + I)⁻¹, μ = ΣXᵀy (unit prior and noise variances)."""
    x = problem.x
    cov = torch.linalg.inv(x.T @ x + torch.eye(x.shape[1], dtype=x.dtype))
    return cov @ x.T @ problem.y, cov


# ============================================================================ the 2-D grid posterior


@dataclass(frozen=True)
class Grid:
    """Cell centres a (n,), b (n,); log p (n, n) normalised so Σ exp(log p)·area = 1 (index [i, j] = (a_i, b_j))."""

    a: torch.Tensor
    b: torch.Tensor
    log_p: torch.Tensor
    log_z: float
    area: float

    def mass(self) -> torch.Tensor:
        return torch.exp(self.log_p) * self.area

    def p_a_positive(self) -> float:
        return float(self.mass()[self.a > 0].sum())

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (2,), cov (2, 2)) by quadrature."""
        m = self.mass()
        aa, bb = torch.meshgrid(self.a, self.b, indexing="ij")
        pts = torch.stack([aa.reshape(-1), bb.reshape(-1)], 1)
        w = m.reshape(-1) / m.sum()
        mean = w @ pts
        dev = pts - mean
        return mean, (dev * w[:, None]).T @ dev


def sample_histogram(theta: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Samples (S, 2) binned on the grid's cells, as a density (n, n) like exp(grid.log_p) (for q-beside-p plots)."""
    theta = theta.detach().to(torch.float64)
    step = float(grid.a[1] - grid.a[0])
    lo = float(grid.a[0]) - step / 2
    n = len(grid.a)
    ij = torch.floor((theta - lo) / step).long()
    inside = ((ij >= 0) & (ij < n)).all(1)
    flat = ij[inside, 0] * n + ij[inside, 1]
    counts = torch.bincount(flat, minlength=n * n).to(torch.float64).view(n, n)
    return counts / (len(theta) * grid.area)


def grid_posterior(problem: Problem, lim: float = 4.0, n: int = 800) -> Grid:
    """The 2-D posterior on n×n cell centres of [−lim, lim]² (n even: no centre on a = 0, so P(a > 0) is a clean sum)."""
    if problem.dim != 2:
        raise ValueError("the grid posterior needs a two-parameter problem")
    step = 2 * lim / n
    axis = torch.linspace(-lim + step / 2, lim - step / 2, n, dtype=torch.float64)
    aa, bb = torch.meshgrid(axis, axis, indexing="ij")
    lp = torch.cat([log_joint(problem, t) for t in torch.stack([aa.reshape(-1), bb.reshape(-1)], 1).split(65536)])
    log_z = float(torch.logsumexp(lp, 0)) + math.log(step * step)
    return Grid(axis, axis, (lp - log_z).view(n, n), log_z, step * step)


def kl_q_p(problem: Problem, theta: torch.Tensor, log_q: torch.Tensor, log_z: float) -> float:
    """KL(q‖p) ≈ mean_s [log q(θ_s) − log p̃(θ_s)] + log Z from samples θ_s ~ q with their exact log q (nats)."""
    return float((log_q.to(torch.float64) - log_joint(problem, theta)).mean() + log_z)


# ============================================================================ metrics


def relative_errors(theta: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> dict[str, float]:
    """‖mean(θ) − μ‖/‖μ‖ and ‖cov(θ) − Σ‖_F/‖Σ‖_F of samples θ (S, D)."""
    theta = theta.to(torch.float64)
    m = theta.mean(0)
    c = torch.cov(theta.T).reshape(len(m), len(m))
    return {"mean_err": float(torch.linalg.norm(m - mean) / torch.linalg.norm(mean)),
            "cov_err": float(torch.linalg.norm(c - cov) / torch.linalg.norm(cov))}


def toy_metrics(problem: Problem, theta: torch.Tensor, log_q: torch.Tensor | None, grid: Grid | None = None) -> dict[str, float]:
    """The problem's metrics for samples θ (S, D) of q with log q(θ) (None for a point estimate: no KL or ELBO)."""
    theta = theta.detach().to(torch.float64)
    out: dict[str, float] = {}
    if problem.name == "linear":
        mean, cov = linear_posterior(problem)
        if log_q is not None:
            out.update(relative_errors(theta, mean, cov))
        else:
            out["mean_err"] = float(torch.linalg.norm(theta.mean(0) - mean) / torch.linalg.norm(mean))
        return out
    grid = grid if grid is not None else grid_posterior(problem)
    out["p_a_pos"] = float((theta[:, 0] > 0).double().mean())
    out["p_a_pos_true"] = grid.p_a_positive()
    if log_q is not None:
        log_q = log_q.detach()
        out["kl"] = kl_q_p(problem, theta, log_q, grid.log_z)
        out["elbo"] = float((log_joint(problem, theta) - log_q.to(torch.float64)).mean())
        mean, cov = grid.moments()  # the true mean is 0 (the branches mirror): its error is absolute
        errors = relative_errors(theta, mean, cov)
        out["mean_err"] = float(torch.linalg.norm(theta.mean(0) - mean))
        out["cov_err"] = errors["cov_err"]
    return out


# ============================================================================ fitting


@dataclass
class ToyFit:
    """The fitted q (None for ``map``), the point for ``map``, the training history, and the metrics."""

    family: str
    hypernet: object | None
    point: torch.Tensor | None
    history: list[dict]
    metrics: dict[str, float]


def fit_toy(problem: Problem, family: str, steps: int, seed: int, lr: float = 1e-3, samples: int = 64,
            coupling: int = 4, flow_hidden: int = 200, eval_samples: int = 20000, record_every: int = 0,
            decay: bool = True, temper: float = 0.0, init_log_scale: float | None = None) -> ToyFit:
    """Fit ``family`` to the problem's exact posterior by reverse KL on the full data's log joint (``samples`` draws
    per step); return the metrics on ``eval_samples`` draws of q. With ``decay`` the steps run in three phases at
    lr, lr/10, lr/100 (halves, then quarters; a fresh Adam each), so the noisy reparameterised gradient settles.

    Departures from the reference (toy_examples/hypernet_trainer.py fits the plain log joint from BHNs.py's init), both
    off by default: ``temper`` > 0 fits log prior + v(t)·log likelihood with v rising linearly from 1e-3 to 1 over the
    first ``temper``·steps steps (core.bhn.train.likelihood_weight; the annealed variational objective of Huang et al.
    2018, AVO: at v ≈ 0 q is the symmetric prior, and the flow carries its mass onto both branches as v grows);
    ``init_log_scale`` moves the LinearFlowLayer's log-scale init mean from the reference's −7 (θ's spread ≈ 0.001,
    which Adam at lr 1e-3 needs ~7,000 steps to undo) to this value (0: spread ≈ 1, the prior's), keeping its jitter."""
    if family not in FAMILIES:
        raise ValueError(f"unknown posterior family {family!r} (choose from {', '.join(FAMILIES)})")
    torch.manual_seed(seed)
    if family == "map":
        gen = torch.Generator().manual_seed(int(seed))
        point = torch.randn(problem.dim, generator=gen, dtype=torch.float64).requires_grad_(True)
        opt = torch.optim.Adam([point], lr=lr)
        history = []
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = -log_joint(problem, point[None])[0]
            loss.backward()
            opt.step()
            if record_every and step % record_every == 0:
                history.append({"step": step, "loss": loss.item()})
        point = point.detach()
        return ToyFit(family, None, point, history, toy_metrics(problem, point[None], None))
    from core.bhn import hypernet as hn
    from core.bhn import train as bt

    hnet = hn.init_hypernet(problem.dim, posterior=family, coupling=coupling, seed=seed, flow_hidden=flow_hidden)
    hnet = hnet.to(torch.float64)
    if init_log_scale is not None:
        with torch.no_grad():
            hnet.linear[0].add_(float(init_log_scale) - REFERENCE_LOG_SCALE)
    phases = [(steps - 2 * (steps // 4), lr), (steps // 4, lr / 10), (steps // 4, lr / 100)] if decay else [(steps, lr)]
    history, done = [], 0
    for i, (n, rate) in enumerate(phases):
        if temper > 0:  # AVO: log prior + v(t) log likelihood, t counted over all phases
            part = bt.fit_hypernet(hnet, log_prior, n, rate, samples, seed + 1000 * i, record_every=record_every,
                                   log_likelihood=lambda th: log_likelihood(problem, th),
                                   likelihood_weight=lambda t, done=done: bt.likelihood_weight(t + done, temper * steps))
        else:
            part = bt.fit_hypernet(hnet, lambda th: log_joint(problem, th), n, rate, samples, seed + 1000 * i,
                                   record_every=record_every)
        history += [{**h, "step": h["step"] + done, "lr": rate} for h in part]
        done += n
    with torch.no_grad():
        theta, log_q = hn.hypernet_sample(hnet, eval_samples, torch.Generator().manual_seed(int(seed) + 1))
    return ToyFit(family, hnet, None, history, toy_metrics(problem, theta, log_q))
