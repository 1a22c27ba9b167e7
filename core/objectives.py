"""Domain-generalization objectives as small pure functions of per-domain risks.

``risks`` is a tensor whose last dimension indexes the m training domains
(leading dimensions, if any, index independent models). Every method's loss is

    loss = base(risks) + l2 * sum ||theta||^2 + w(step) * penalty(risks),
    w(step) = 1 before ``anneal_iters``, ``penalty_weight`` from then on,
    and the whole loss is divided by w whenever w > 1 (IRM / REx code).

- ``erm``: base = mean_e R_e, no penalty.
- ``irm`` (IRMv1): penalty = mean_e ||d R_e(s * f) / ds at s=1||^2.
- ``vrex``: penalty = mean over domain pairs of (R_e - R_f)^2 = 2 * sample
  variance of the risks; with two domains exactly (R_1 - R_2)^2 as in the REx code.
- ``mmrex``: penalty = m/(m-1) * (max_e R_e - mean_e R_e); with two domains
  exactly |R_1 - R_2| as in the REx code. mean + w * penalty equals eq. 5.7,
  (1 - m lmin) max_e R_e + lmin sum_e R_e, at lmin = :func:`mmrex_lambda_min`.
- ``ri`` (risk interpolation / group DRO): base = max_e R_e, no penalty
  (eq. 5.5, MM-REx at lmin = 0).
- ``grayscale``: the oracle; ERM's objective on a model that sums the colour channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

METHODS = ("erm", "irm", "vrex", "mmrex", "ri", "grayscale")
PENALIZED = ("irm", "vrex", "mmrex")


def check_method(method: str) -> str:
    """Return ``method`` if known, else raise ValueError naming the choices."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    return method


def mean_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the example dimension (-2)."""
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(dim=(-2, -1))


def mean_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of examples with (logit > 0) == y."""
    return ((logits > 0).float() == y).float().mean(dim=(-2, -1))


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty of one domain, (d/ds mean_nll(s * logits, y) at s = 1)^2, in closed form.

    For binary cross-entropy d/ds BCE(s f, y) = (sigmoid(s f) - y) f, so the
    gradient at s = 1 is mean((sigmoid(f) - y) * f); it equals the reference's
    ``autograd.grad(..., create_graph=True)`` (see :func:`irm_penalty_autograd`)
    and stays differentiable w.r.t. the model.
    """
    grad = ((torch.sigmoid(logits) - y) * logits).mean(dim=(-2, -1))
    return grad**2


def irm_penalty_autograd(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The IRM reference's penalty: gradient w.r.t. a dummy scale, taken with create_graph."""
    scale = torch.ones((), device=logits.device, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(logits * scale, y)
    (grad,) = torch.autograd.grad(loss, [scale], create_graph=True)
    return grad**2


def vrex_penalty(risks: torch.Tensor) -> torch.Tensor:
    """Mean over domain pairs of (R_e - R_f)^2 (= 2 x sample variance; (R1 - R2)^2 for m = 2)."""
    return 2.0 * risks.var(dim=-1, unbiased=True)


def mmrex_penalty(risks: torch.Tensor) -> torch.Tensor:
    """m/(m-1) * (max_e R_e - mean_e R_e); |R1 - R2| for m = 2."""
    m = risks.shape[-1]
    return m / (m - 1) * (risks.max(dim=-1).values - risks.mean(dim=-1))


def mmrex_lambda_min(penalty_weight: float, m: int) -> float:
    """The lmin of eq. 5.7 at which mean + w * mmrex_penalty equals the MM-REx objective."""
    return (1.0 - penalty_weight * m / (m - 1)) / m


def mm_rex_objective(risks: torch.Tensor, lambda_min: float) -> torch.Tensor:
    """Eq. 5.7: (1 - m * lmin) * max_e R_e + lmin * sum_e R_e."""
    m = risks.shape[-1]
    return (1 - m * lambda_min) * risks.max(dim=-1).values + lambda_min * risks.sum(dim=-1)


def risk_interpolation(risks: torch.Tensor) -> torch.Tensor:
    """Eq. 5.5 (RI / group DRO): max_e R_e."""
    return risks.max(dim=-1).values


def penalty_weight_at(step: int, penalty_weight, anneal_iters):
    """1.0 before ``anneal_iters``, then ``penalty_weight`` (IRM/REx schedule); tensors broadcast."""
    pw, anneal = torch.as_tensor(penalty_weight, dtype=torch.float32), torch.as_tensor(anneal_iters)
    return torch.where(step >= anneal, pw, torch.ones_like(pw))


def method_penalty(method: str, risks: torch.Tensor, irm_penalties: torch.Tensor | None) -> torch.Tensor:
    """The penalty term of ``method`` (zero for erm, ri and grayscale)."""
    if method == "irm":
        return irm_penalties.mean(dim=-1)
    if method == "vrex":
        return vrex_penalty(risks)
    if method == "mmrex":
        return mmrex_penalty(risks)
    return torch.zeros_like(risks[..., 0])


def training_loss(
    method: str,
    risks: torch.Tensor,
    irm_penalties: torch.Tensor | None,
    sq_weight_norm: torch.Tensor,
    *,
    step: int,
    l2,
    penalty_weight,
    anneal_iters,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one step and the unweighted penalty, per the module docstring.

    ``l2``, ``penalty_weight`` and ``anneal_iters`` are numbers or tensors
    broadcasting against ``risks[..., 0]`` (one value per model of a block).
    """
    base = risk_interpolation(risks) if method == "ri" else risks.mean(dim=-1)
    penalty = method_penalty(method, risks, irm_penalties)
    loss = base + torch.as_tensor(l2, dtype=risks.dtype, device=risks.device) * sq_weight_norm
    if method in PENALIZED:
        w = penalty_weight_at(step, penalty_weight, anneal_iters).to(risks.device)
        loss = (loss + w * penalty) / torch.where(w > 1.0, w, torch.ones_like(w))
    return loss, penalty
