"""The methods, one registry entry each (DomainBed's ``algorithms.py`` list is the model).

A :class:`Method` says everything that differs between methods: its penalty
(a function of the per-domain risks and IRM penalties), how it combines the
domain risks (mean, or max for RI), the model input it takes (all features, or
the colour channels summed for the grayscale oracle), its display name, and
the reference code its published rows come from, whose *risk reduction* it
follows by default. Every pipeline, task and the SEM code read this registry;
:func:`objective` is the one loss they all use::

    loss = risk + l2 * sum ||theta||^2 + w(step) * penalty,   divided by w when w > 1
    risk = mean_e R_e (max_e R_e for RI)                      with reduction "mean"
         = m * that (sum_e R_e; m * max_e R_e for RI)         with reduction "sum"
    w(step) = 1 before ``anneal_iters``, ``penalty_weight`` from then on

The reduction is the one place where the two reference codes differ: the IRM
code takes the mean of the training-domain risks, the REx code
(``colored_mnist/main.py``, ``erm_amount * (loss1 + loss2)``) their sum, for
every penalty. With Adam the sum equals the mean at twice the penalty weight
and twice the L2 weight; before the anneal step the REx code's MM-REx is risk
interpolation (R1 + R2 + |R1 - R2| = 2 max_e R_e) where the mean would make it
extrapolation, and its RI (``--mse False --penalty_weight 1.0``) is 2 max_e R_e.
The IRM penalty is averaged over domains in the image and RL code and summed
in the IRM SEM code (``irm_reduction``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core import objectives as obj

REDUCTIONS = obj.DOMAIN_REDUCTIONS  # "mean" (IRM code) or "sum" (REx code)
CODES = {"irm": "IRM code (facebookresearch/InvariantRiskMinimization)", "rex": "REx code (capybaralet/REx_code_release)"}

Penalty = Callable[[torch.Tensor, "torch.Tensor | None", str], torch.Tensor]


def _irm(risks: torch.Tensor, irm: torch.Tensor | None, irm_reduction: str) -> torch.Tensor:
    if irm is None:
        raise ValueError("the IRM penalty needs the per-domain IRM penalties")
    return obj.reduce_domains(irm, irm_reduction)


def _vrex(risks: torch.Tensor, irm: torch.Tensor | None, irm_reduction: str) -> torch.Tensor:
    return obj.vrex_penalty(risks)


def _mmrex(risks: torch.Tensor, irm: torch.Tensor | None, irm_reduction: str) -> torch.Tensor:
    return obj.mmrex_penalty(risks)


@dataclass(frozen=True)
class Method:
    """One method: its penalty (None: unpenalized), risk (mean or max), model input, name and reference code."""

    name: str
    display: str
    penalty: Penalty | None
    risk: str = "mean"  # "mean", or "max" (RI / group DRO, eq. 5.5)
    input: str = "full"  # "full", or "grayscale" (the colour channels summed)
    code: str = "irm"  # the reference code of its published rows: its default risk reduction
    description: str = ""

    @property
    def reduction(self) -> str:
        """The risk reduction of its reference code: "mean" (IRM code) or "sum" (REx code)."""
        return "sum" if self.code == "rex" else "mean"

    @property
    def penalized(self) -> bool:
        return self.penalty is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("erm", "ERM", None, description="empirical risk minimization"),
        Method("irm", "IRM", _irm, description="IRMv1: mean_e (d R_e(s f) / ds at s=1)^2"),
        Method("vrex", "V-REx", _vrex, code="rex", description="variance of the domain risks (eq. 5.8)"),
        Method("mmrex", "MM-REx", _mmrex, code="rex", description="minimax REx, |R1 - R2| for two domains (eq. 5.7)"),
        Method("ri", "RI", None, risk="max", code="rex", description="risk interpolation / group DRO: max_e R_e (eq. 5.5)"),
        Method("grayscale", "Grayscale oracle", None, input="grayscale", description="ERM on the colour channels summed"),
    )
}


def get(name: str) -> Method:
    """The method called ``name``; ValueError naming the choices for an unknown one."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name]


def names(*, input: str | None = None, penalized: bool | None = None) -> list[str]:
    """Registry names, in registry order, optionally only those with this input / penalization."""
    return [m.name for m in METHODS.values() if (input is None or m.input == input) and (penalized is None or m.penalized == penalized)]


def resolve_reduction(method: str, reduction: str) -> str:
    """``reduction`` ("mean" or "sum"), or the method's reference-code reduction for "method"."""
    if reduction == "method":
        return get(method).reduction
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown risk reduction {reduction!r} (choose from method, {', '.join(REDUCTIONS)})")
    return reduction


def risk_term(method: str, risks: torch.Tensor, reduction: str) -> torch.Tensor:
    """The method's combination of the domain risks (last dimension) under ``reduction``."""
    base = obj.risk_interpolation(risks) if get(method).risk == "max" else risks.mean(dim=-1)
    return base * risks.shape[-1] if resolve_reduction(method, reduction) == "sum" else base


def objective(
    method: str,
    risks: torch.Tensor,
    irm: torch.Tensor | None,
    sq_weight_norm,
    *,
    step: int,
    l2,
    penalty_weight,
    anneal_iters,
    reduction: str,
    irm_reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one step and the method's unweighted penalty (zeros when unpenalized), per the module docstring.

    ``risks`` and ``irm`` (per-domain IRM penalties, needed by IRM only) have
    the domains in their last dimension; ``l2``, ``penalty_weight`` and
    ``anneal_iters`` are numbers or tensors broadcasting against ``risks[..., 0]``
    (one value per model of a block).
    """
    entry = get(method)
    loss = risk_term(method, risks, reduction)
    loss = loss + torch.as_tensor(l2, dtype=risks.dtype, device=risks.device) * sq_weight_norm
    if entry.penalty is None:
        return loss, torch.zeros_like(risks[..., 0])
    penalty = entry.penalty(risks, irm, irm_reduction)
    weight = obj.penalty_weight_at(step, penalty_weight, anneal_iters, dtype=risks.dtype)
    return obj.weigh_penalty(loss, penalty, weight), penalty


# ------------------------------------------------------------------ DomainBed's formulas
#
# DomainBed (facebookresearch/DomainBed, domainbed/algorithms.py) writes IRM and V-REx differently from the
# Colored MNIST reference codes above, so its pipeline (pipelines/rex/domainbed.py) names these entries:
#   IRM:  mean_e R_e + w * mean_e g_e(even half) * g_e(odd half)   (split-batch product, not the square)
#   VREx: mean_e R_e + w * mean_e (R_e - mean R)^2                  (population variance, not the pairs' mean)
#   w = 1 before the anneal step, lambda from it on, and the loss is *not* divided by w; Adam is re-created at
#   the anneal step ("Adam doesn't like the sharp jump in gradient magnitudes").
#   GroupDRO: sum_e q_e R_e with q_e <- q_e exp(eta R_e), normalised, every step (Sagawa et al.'s online version,
#   not RI's max_e R_e).
# MM-REx is ours beside them, with V-REx's conventions: mean_e R_e + w * mmrex_penalty (the same penalty as above).


def _mmrex_any(risks: torch.Tensor) -> torch.Tensor:
    """The MM-REx penalty, 0 for one training environment (a DomainBed run with two of Colored MNIST's three held out)."""
    return obj.mmrex_penalty(risks) if risks.shape[-1] > 1 else torch.zeros_like(risks[..., 0])


@dataclass(frozen=True)
class DomainBedMethod:
    """One algorithm with DomainBed's conventions: its penalty, its hyperparameter names, whether Adam resets."""

    name: str
    display: str
    algorithm: str  # DomainBed's class name (it seeds the runs)
    penalty: Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor] | None = None  # (risks, irm terms) -> (...,)
    lambda_key: str = ""  # the penalty weight's hyperparameter
    anneal_key: str = ""  # the anneal step's hyperparameter
    groupdro: bool = False  # risks weighted by group DRO's online weights (hyperparameter groupdro_eta)
    ours: bool = False  # not in DomainBed
    description: str = ""

    @property
    def needs_irm(self) -> bool:
        return self.name == "irm"

    @property
    def resets_adam(self) -> bool:
        return self.penalty is not None


DOMAINBED_METHODS: dict[str, DomainBedMethod] = {
    m.name: m
    for m in (
        DomainBedMethod("erm", "ERM", "ERM", description="cross-entropy of the training environments' minibatches together"),
        DomainBedMethod("irm", "IRM", "IRM", lambda risks, irm: irm.mean(dim=-1), "irm_lambda", "irm_penalty_anneal_iters",
                        description="mean risk + lambda * mean_e (split-batch product of dummy-scale gradients)"),
        DomainBedMethod("groupdro", "GroupDRO", "GroupDRO", groupdro=True, description="online group DRO weights, step eta"),
        DomainBedMethod("vrex", "VREx", "VREx", lambda risks, irm: obj.variance_penalty(risks), "vrex_lambda",
                        "vrex_penalty_anneal_iters", description="mean risk + lambda * population variance of the risks"),
        DomainBedMethod("mmrex", "MM-REx", "MMREx", lambda risks, irm: _mmrex_any(risks), "mmrex_lambda",
                        "mmrex_penalty_anneal_iters", ours=True,
                        description="ours: mean risk + lambda * m/(m-1) (max_e R_e - mean_e R_e), V-REx's schedule"),
    )
}


def domainbed(name: str) -> DomainBedMethod:
    """The DomainBed-convention entry called ``name``; ValueError naming the choices for an unknown one."""
    if name not in DOMAINBED_METHODS:
        raise ValueError(f"unknown DomainBed method {name!r} (choose from {', '.join(DOMAINBED_METHODS)})")
    return DOMAINBED_METHODS[name]


def domainbed_objective(
    method: str, risks: torch.Tensor, irm: torch.Tensor | None = None, *, step: int, penalty_weight=0.0, anneal_iters=0,
    q: torch.Tensor | None = None, eta=None,
) -> tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]:
    """The loss of one DomainBed update, its unweighted penalty, and group DRO's new weights (None for the others).

    ``risks`` (..., m) are the training environments' mean cross-entropies;
    ``irm`` (..., m) the split-batch IRM terms (IRM only); ``penalty_weight``,
    ``anneal_iters``, ``eta`` numbers or (...,) tensors (one per model of a
    block); ``q`` (..., m) group DRO's weights before this step.
    """
    entry = domainbed(method)
    if entry.groupdro:
        if q is None or eta is None:
            raise ValueError("GroupDRO needs its weights q and step eta")
        q = obj.groupdro_weights(q, risks, eta)
        return (q * risks).sum(dim=-1), torch.zeros_like(risks[..., 0]), q
    loss = risks.mean(dim=-1)
    if entry.penalty is None:
        return loss, torch.zeros_like(loss), None
    penalty = entry.penalty(risks, irm)
    weight = obj.penalty_weight_at(step, penalty_weight, anneal_iters, dtype=risks.dtype).to(risks.device)
    return loss + weight * penalty, penalty, None
