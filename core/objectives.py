"""The math of the domain-generalization objectives, as small pure functions of per-domain risks.

``risks`` is a tensor whose last dimension indexes the m training domains
(leading dimensions, if any, index independent models). Which method uses
which function, and how, is :mod:`core.methods` (the registry); this module
only holds the formulas, each written once:

- IRMv1 per-domain penalty, (d R_e(s * f) / ds at s = 1)^2: closed form for
  binary cross-entropy (:func:`irm_penalty`), for the squared loss
  (:func:`irm_penalty_mse`), and the reference's autograd form;
  :func:`reduce_domains` combines the per-domain values (mean in the image and
  RL code, sum in the IRM SEM code).
- V-REx: mean over domain pairs of (R_e - R_f)^2 = 2 * sample variance; (R1 - R2)^2 for m = 2.
- MM-REx: m/(m-1) * (max_e R_e - mean_e R_e); |R1 - R2| for m = 2.
- The penalty schedule and rescaling of the IRM / REx code (:func:`penalty_weight_at`,
  :func:`weigh_penalty`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DOMAIN_REDUCTIONS = ("mean", "sum")


def mean_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the example dimension (-2)."""
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(dim=(-2, -1))


def mean_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of examples with (logit > 0) == y."""
    return ((logits > 0).float() == y).float().mean(dim=(-2, -1))


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty of one domain for binary cross-entropy, (d/ds mean_nll(s * logits, y) at s = 1)^2, in closed form.

    d/ds BCE(s f, y) = (sigmoid(s f) - y) f, so the gradient at s = 1 is
    mean((sigmoid(f) - y) * f); it equals the reference's
    ``autograd.grad(..., create_graph=True)`` (see :func:`irm_penalty_autograd`)
    and stays differentiable w.r.t. the model.
    """
    grad = ((torch.sigmoid(logits) - y) * logits).mean(dim=(-2, -1))
    return grad**2


def irm_penalty_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty of one domain for the squared loss: (d/ds mean((s f - t)^2) at s = 1)^2 = mean(2 (f - t) f)^2."""
    return (2.0 * (prediction - target) * prediction).mean() ** 2


def irm_penalty_autograd(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The IRM reference's penalty: gradient w.r.t. a dummy scale, taken with create_graph."""
    scale = torch.ones((), device=logits.device, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(logits * scale, y)
    (grad,) = torch.autograd.grad(loss, [scale], create_graph=True)
    return grad**2


def reduce_domains(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Mean or sum over the last (domain) dimension."""
    if reduction == "mean":
        return values.mean(dim=-1)
    if reduction == "sum":
        return values.sum(dim=-1)
    raise ValueError(f"unknown reduction {reduction!r} (choose from {', '.join(DOMAIN_REDUCTIONS)})")


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


def penalty_weight_at(step: int, penalty_weight, anneal_iters, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1.0 before ``anneal_iters``, then ``penalty_weight`` (IRM / REx schedule); tensors broadcast."""
    pw, anneal = torch.as_tensor(penalty_weight, dtype=dtype), torch.as_tensor(anneal_iters)
    return torch.where(step >= anneal.to(pw.device), pw, torch.ones_like(pw))


def weigh_penalty(loss: torch.Tensor, penalty: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """loss + w * penalty, the whole divided by w where w > 1 (IRM / REx code: "rescale the entire loss").

    Written as loss / scale + coef * penalty so that w = inf (a pure penalty,
    the SEM reference's reg = 0) gives the penalty alone, gradients included.
    """
    weight = weight.to(device=loss.device, dtype=loss.dtype)
    above = weight > 1.0
    scale = torch.where(above, weight, torch.ones_like(weight))
    coef = torch.where(above, torch.ones_like(weight), weight)
    return loss / scale + coef * penalty


# ------------------------------------------------------------------ DomainBed's formulas (facebookresearch/DomainBed)


def ce_scale_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/ds mean cross-entropy(s * logits, y) at s = 1, in closed form: mean_i (softmax(z_i) . z_i - z_i[y_i]).

    ``logits`` (..., n, classes), ``y`` (..., n) integer labels; differentiable
    w.r.t. the logits (equal to DomainBed's ``autograd.grad(..., create_graph=True)``).
    """
    expected = (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)
    return (expected - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)).mean(dim=-1)


def irm_split_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DomainBed's IRM penalty of one environment: the product of the dummy-scale gradients on its even and odd examples.

    ``algorithms.IRM._irm_penalty``: grad_1 * grad_2 with grad_1 on ``logits[::2]``
    and grad_2 on ``logits[1::2]`` (an unbiased estimate of the squared gradient).
    """
    return ce_scale_grad(logits[..., ::2, :], y[..., ::2]) * ce_scale_grad(logits[..., 1::2, :], y[..., 1::2])


def variance_penalty(risks: torch.Tensor) -> torch.Tensor:
    """DomainBed's V-REx penalty: the population variance of the environment risks, mean_e (R_e - mean R)^2."""
    return ((risks - risks.mean(dim=-1, keepdim=True)) ** 2).mean(dim=-1)


def groupdro_weights(q: torch.Tensor, risks: torch.Tensor, eta) -> torch.Tensor:
    """Group DRO's online weights (``algorithms.GroupDRO``): q_e * exp(eta * R_e), normalised; no gradient through them."""
    eta = torch.as_tensor(eta, dtype=risks.dtype, device=risks.device)
    if eta.dim():
        eta = eta.unsqueeze(-1)
    q = q * torch.exp(eta * risks.detach())
    return q / q.sum(dim=-1, keepdim=True)
