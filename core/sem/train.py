"""Linear regression over SEM domains with ERM, IRMv1, V-REx and MM-REx (IRM / REx SEM code).

All solvers fit ``target ~ inputs @ beta`` (no intercept) with the squared loss.
``domains`` is a list whose last element is the validation domain and the
others are the training domains (:data:`core.sem.data.N_TRAIN_DOMAINS`).

- ``erm``: least squares on every domain pooled, validation domain included
  (the IRM code's ``EmpiricalRiskMinimizer``); closed form.
- ``irm`` (IRMv1, IRM code): beta = Phi @ w with Phi (dim, dim) trained from the
  identity and w = 1 a fixed dummy vector; the penalty of domain e is
  mean_j (d R_e / d w_j)^2 = mean_j (Phi^T grad_beta R_e)_j^2, summed over the
  training domains. ``irm_dummy="scalar"`` instead uses the dummy scalar of
  IRMv1 for classification, (d R_e(s * beta) / ds at s=1)^2 = (beta . grad R_e)^2.
- ``vrex`` / ``mmrex`` (REx code, ``REX_0`` with the MSE / MAE penalty): beta is
  trained directly from the all-ones vector; penalty = ``vrex_penalty`` /
  ``mmrex_penalty`` of core.objectives on the training risks ((R1 - R2)^2 and
  |R1 - R2| with two training domains).

Loss of the penalized methods at step t (:func:`core.methods.objective` with
the REx / IRM SEM code's conventions: risks summed over the training domains,
IRM penalties summed too, no L2), with w = ``penalty_weight_at(t, ...)``::

    loss = sum_e R_e + w * penalty,  divided by w when w > 1,

which is the reference's ``reg * sum_e R_e + (1 - reg) * penalty`` divided by
(1 - reg) for w = (1 - reg) / reg (Adam is invariant to that constant factor up
to its epsilon); reg = 0 (pure penalty) is w = inf, i.e. loss = penalty. By
default (``penalty_weight < 0``) the reference's grid reg in {0, 1e-5, 1e-4,
1e-3, 1e-2, 1e-1} is trained and the model with the lowest validation MSE is
kept (first in grid order on ties); the grid's models are trained together as
one stacked block with :class:`core.optim.BatchedAdam` (torch.optim.Adam's
update, default betas and eps, as the reference; element-wise, so they never
interact, and equal to a torch.optim.Adam over the stacked tensor). Any registry method with
a penalty fits this way; unpenalized ones (ERM) are solved in closed form.

Risks are computed from per-domain second moments (R_e(beta) = beta^T A_e beta
- 2 beta^T b_e + c_e with A_e = X^T X / n, b_e = X^T y / n, c_e = y^T y / n),
which is exactly the mean squared error without touching the samples each step.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from core import methods
from core.sem import hparams
from core.optim import BatchedAdam
from core.sem.data import Domain

METHODS = tuple(methods.names(input="full", penalized=True))  # the penalized methods; plus ERM in closed form
REFERENCE_REGS: tuple[float, ...] = hparams.REGS
IRM_DUMMIES = ("vector", "scalar")
DTYPE = torch.float64
RISK_REDUCTION = "sum"  # the SEM reference codes sum the training-domain risks ...
IRM_REDUCTION = "sum"  # ... and the IRM penalties


def check_method(method: str) -> str:
    """Return ``method`` if it is ERM or a penalized registry method, else raise ValueError."""
    if method != "erm" and method not in METHODS:
        raise ValueError(f"unknown SEM method {method!r} (choose from erm, {', '.join(METHODS)})")
    return method


def penalty_weight_from_reg(reg: float) -> float:
    """The penalty weight w = (1 - reg) / reg equivalent to the reference's ERM share ``reg`` (inf for 0)."""
    return math.inf if reg == 0 else (1.0 - reg) / reg


def reg_from_penalty_weight(weight: float) -> float:
    """Inverse of :func:`penalty_weight_from_reg` for w > 1: reg = 1 / (1 + w) (0 for inf)."""
    return 0.0 if math.isinf(weight) else 1.0 / (1.0 + weight)


REFERENCE_PENALTY_WEIGHTS: tuple[float, ...] = tuple(penalty_weight_from_reg(r) for r in REFERENCE_REGS)


@dataclass(frozen=True)
class SolverConfig:
    """Hyperparameters of the penalized solvers (reference names in brackets, reference values as defaults)."""

    lr: float = hparams.LR  # [lr], Adam
    steps: int = hparams.STEPS  # [n_iterations]
    penalty_weight: float = -1.0  # < 0: the reference grid [reg = -1], chosen on the validation domain
    anneal_iters: int = 0  # weight 1.0 before this step (the SEM reference has no anneal)
    irm_dummy: str = "vector"  # the IRM code's dummy w = ones(dim, 1); "scalar": IRMv1's scalar dummy
    eval_every: int = 10_000  # report the selected model's metrics every this many steps

    def weights(self) -> tuple[float, ...]:
        """The penalty weights trained side by side: the reference grid, or the one given."""
        return REFERENCE_PENALTY_WEIGHTS if self.penalty_weight < 0 else (float(self.penalty_weight),)


@dataclass(frozen=True)
class Moments:
    """Per-domain second moments: ``gram`` (E, p, p) = X^T X / n, ``cross`` (E, p) = X^T y / n, ``sq`` (E,) = y^T y / n."""

    gram: torch.Tensor
    cross: torch.Tensor
    sq: torch.Tensor


def moments(domains: Sequence[Domain]) -> Moments:
    """The second moments of each domain, in float64."""
    xs = [torch.as_tensor(d.inputs, dtype=DTYPE) for d in domains]
    ys = [torch.as_tensor(d.target, dtype=DTYPE) for d in domains]
    return Moments(
        gram=torch.stack([x.T @ x / len(x) for x in xs]),
        cross=torch.stack([x.T @ y / len(x) for x, y in zip(xs, ys)]),
        sq=torch.stack([y @ y / len(y) for y in ys]),
    )


def domain_risks(beta: torch.Tensor, m: Moments) -> torch.Tensor:
    """Mean squared error of each model (rows of ``beta``, (G, p)) on each domain: (G, E)."""
    quad = ((beta @ m.gram) * beta).sum(dim=-1).T  # (E, G, p) -> (G, E)
    return quad - 2.0 * beta @ m.cross.T + m.sq


def risk_gradients(beta: torch.Tensor, m: Moments) -> torch.Tensor:
    """d R_e / d beta = 2 (A_e beta - b_e) for each model and domain: (G, E, p)."""
    return 2.0 * ((beta @ m.gram).transpose(0, 1) - m.cross)  # gram is symmetric: A_e beta = beta A_e


def irm_penalties(beta: torch.Tensor, phi: torch.Tensor | None, m: Moments, dummy: str = "vector") -> torch.Tensor:
    """IRMv1 penalty of each model on each domain, (G, E), differentiable w.r.t. ``beta`` / ``phi``.

    ``vector`` (IRM SEM code; beta = Phi @ 1, ``phi`` (G, p, p)): mean_j ((Phi^T grad R_e)_j)^2,
    the squared gradient w.r.t. the dummy vector w at w = 1, averaged over its entries.
    ``scalar``: (d R_e(s beta)/ds at s = 1)^2 = (beta . grad R_e)^2 (``phi`` unused).
    """
    grads = risk_gradients(beta, m)
    if dummy == "vector":
        if phi is None:
            raise ValueError("the vector dummy needs the matrix Phi")
        return (grads @ phi).pow(2).mean(dim=-1)  # row e of grads @ Phi is (Phi^T grad R_e)^T
    if dummy == "scalar":
        return (grads * beta.unsqueeze(1)).sum(dim=-1).pow(2)
    raise ValueError(f"unknown IRM dummy {dummy!r} (choose from {', '.join(IRM_DUMMIES)})")


def least_squares(domains: Sequence[Domain]) -> np.ndarray:
    """ERM: the minimum-norm least-squares coefficients on all ``domains`` pooled."""
    x = torch.as_tensor(np.concatenate([d.inputs for d in domains]), dtype=DTYPE)
    y = torch.as_tensor(np.concatenate([d.target for d in domains]), dtype=DTYPE)
    return torch.linalg.lstsq(x, y.unsqueeze(-1), driver="gelsd").solution.squeeze(-1).numpy()


@dataclass(frozen=True)
class LinearFit:
    """A fitted model: ``beta`` on the (possibly scrambled) inputs and how it was chosen."""

    beta: np.ndarray
    penalty_weight: float  # inf: pure penalty (reference reg = 0); 0 for ERM
    val_mse: float  # MSE on the validation domain
    train_mse: float  # mean over the training domains of their MSE
    penalty: float  # the method's unweighted penalty on the training domains (0 for ERM)

    @property
    def reg(self) -> float:
        """The reference's ERM share for this weight (1.0 for ERM)."""
        return 1.0 if self.penalty_weight == 0 else reg_from_penalty_weight(self.penalty_weight)


def _select(beta: torch.Tensor, penalty: torch.Tensor, weights: Sequence[float], train: Moments, val: Moments) -> LinearFit:
    """The model of the block with the lowest validation MSE (first on ties)."""
    with torch.no_grad():
        val_mse = domain_risks(beta, val)[:, 0]
        train_mse = domain_risks(beta, train).mean(dim=-1)
    best = int(torch.argmin(val_mse))
    return LinearFit(
        beta=beta[best].detach().numpy().copy(), penalty_weight=float(weights[best]), val_mse=float(val_mse[best]),
        train_mse=float(train_mse[best]), penalty=float(penalty[best]),
    )


@contextmanager
def single_thread():
    """Run torch on one intra-op thread, restoring the previous count on exit.

    The solvers' tensors are tiny (dim x dim); on a busy machine multi-threaded
    batched matmuls of that size are several hundred times slower than one thread
    (the IRM code also calls ``torch.set_num_threads(1)``).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit_penalized(
    method: str, domains: Sequence[Domain], config: SolverConfig, on_eval: Callable[[int, LinearFit], None] | None = None,
) -> LinearFit:
    """Train IRM / V-REx / MM-REx with Adam on all but the last domain; select on the last.

    ``on_eval(step, fit)`` receives the currently selected model after ``step``
    updates, every ``config.eval_every`` steps and after the last one.
    """
    with single_thread():
        return _fit_penalized(method, domains, config, on_eval)


def _fit_penalized(
    method: str, domains: Sequence[Domain], config: SolverConfig, on_eval: Callable[[int, LinearFit], None] | None,
) -> LinearFit:
    check_method(method)
    if not methods.get(method).penalized:
        raise ValueError("ERM is solved in closed form: use least_squares")
    if len(domains) < 3:
        raise ValueError("need at least two training domains and one validation domain")
    if config.irm_dummy not in IRM_DUMMIES:
        raise ValueError(f"unknown IRM dummy {config.irm_dummy!r} (choose from {', '.join(IRM_DUMMIES)})")
    train, val = moments(domains[:-1]), moments(domains[-1:])
    weights = config.weights()
    g, p = len(weights), domains[0].inputs.shape[1]
    weight_tensor = torch.tensor(weights, dtype=torch.float64)
    if method == "irm":
        param = torch.eye(p, dtype=DTYPE).repeat(g, 1, 1).requires_grad_()  # Phi; beta = Phi @ ones
    else:
        param = torch.ones(g, p, dtype=DTYPE).requires_grad_()  # beta itself
    optimizer = BatchedAdam([param], float(config.lr))

    def forward(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        beta = param.sum(dim=-1) if method == "irm" else param
        risks = domain_risks(beta, train)
        irm = irm_penalties(beta, param if method == "irm" else None, train, config.irm_dummy) if method == "irm" else None
        loss, penalty = methods.objective(
            method, risks, irm, 0.0, step=step, l2=0.0, penalty_weight=weight_tensor, anneal_iters=config.anneal_iters,
            reduction=RISK_REDUCTION, irm_reduction=IRM_REDUCTION,
        )
        return beta, loss, penalty

    steps, every = int(config.steps), max(1, int(config.eval_every))
    for step in range(steps):
        _, loss, _ = forward(step)
        optimizer.step(torch.autograd.grad(loss.sum(), [param]))
        done = step + 1
        if on_eval is not None and done % every == 0 and done != steps:
            beta, _, penalty = forward(done)
            on_eval(done, _select(beta, penalty.detach(), weights, train, val))
    beta, _, penalty = forward(steps)
    fit = _select(beta, penalty.detach(), weights, train, val)
    if on_eval is not None:
        on_eval(steps, fit)
    return fit


def fit_erm(domains: Sequence[Domain]) -> LinearFit:
    """ERM as in the IRM code: least squares on all domains pooled (metrics as for the other methods)."""
    beta = least_squares(domains)
    b = torch.as_tensor(beta, dtype=DTYPE).unsqueeze(0)
    return LinearFit(
        beta=beta, penalty_weight=0.0, val_mse=float(domain_risks(b, moments(domains[-1:]))[0, 0]),
        train_mse=float(domain_risks(b, moments(domains[:-1])).mean()), penalty=0.0,
    )


def fit(method: str, domains: Sequence[Domain], config: SolverConfig, on_eval: Callable[[int, LinearFit], None] | None = None) -> LinearFit:
    """Fit ``method`` (see the module docstring); ERM calls ``on_eval(0, fit)`` once."""
    if check_method(method) == "erm":
        result = fit_erm(domains)
        if on_eval is not None:
            on_eval(0, result)
        return result
    return fit_penalized(method, domains, config, on_eval)
