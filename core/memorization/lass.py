"""Langevin adversarial sample search (LASS, thesis Algorithm 1) and the critical sample ratio.

A point x is *critical* when some x_hat with ||x_hat - x||_inf <= r has a
different predicted class (thesis eq. 3.1). LASS searches for x_hat, for all
points of a batch at once:

    x_hat <- x_hat + alpha * sign(grad) + beta * eta,   eta ~ N(0, 1) per element,
    x_hat <- clip(project_box(x_hat, x, r), pixel range),

where grad is the gradient of the cross-entropy of model(x_hat) against the
model's CURRENT predicted label of the original x (ascent: away from it). A
point becomes critical as soon as its prediction differs from that label and
is not moved afterwards. At most ``max_iter`` (100) steps, as in the reference
code (Arpit's search, ported in xingjunm/dimensionality-driven-learning
``lass_tf.py``).

Scale: the thesis sets alpha = 0.25, beta = 0.2, r = 0.3 on the 0-255 pixel
scale; our inputs are in [0, 1], so the defaults are those values divided by
255 (as in the reference code). The model runs in eval mode during the search
(no dropout, BatchNorm running statistics) and gets its previous mode back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ALPHA", "BETA", "RADIUS", "MAX_ITER", "lass", "critical_sample_ratio", "adversarial_loss"]

ALPHA = 0.25 / 255.0  # gradient-sign step (0.25 on the 0-255 scale)
BETA = 0.2 / 255.0  # noise scale (0.2 on the 0-255 scale)
RADIUS = 0.3 / 255.0  # L_inf box radius (0.3 on the 0-255 scale)
MAX_ITER = 100


def _search(
    model: nn.Module,
    x: torch.Tensor,
    alpha: float,
    beta: float,
    radius: float,
    max_iter: int,
    pixel_range: tuple[float, float] | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LASS on one chunk; the model is already in eval mode."""
    with torch.no_grad():
        label = model(x).argmax(dim=1)
    lower, upper = x - radius, x + radius
    if pixel_range is not None:
        lower, upper = lower.clamp(*pixel_range), upper.clamp(*pixel_range)
    x_hat, critical = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        active = (~critical).nonzero().squeeze(1)
        if len(active) == 0:
            break
        point = x_hat[active].requires_grad_(True)
        loss = F.cross_entropy(model(point), label[active], reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
        eta = torch.randn(point.shape, generator=generator, device=generator.device if generator else x.device)
        step = alpha * grad.sign() + beta * eta.to(x.device)
        moved = torch.minimum(torch.maximum(point.detach() + step, lower[active]), upper[active])
        x_hat[active] = moved
        with torch.no_grad():
            critical[active] = model(moved).argmax(dim=1) != label[active]
    return x_hat, critical


def lass(
    model: nn.Module,
    x: torch.Tensor,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    radius: float = RADIUS,
    max_iter: int = MAX_ITER,
    pixel_range: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search every point of x for an adversarial x_hat; returns (x_hat, critical mask (N,) bool).

    For critical points x_hat is the first point found whose prediction differs;
    for the others it is where the search ended (always inside the box and
    ``pixel_range``; None = no clipping). ``alpha``, ``beta`` and ``radius`` are
    on the scale of x. ``generator`` makes the noise reproducible. x is searched
    in chunks of ``batch_size``; gradients of the model's parameters are untouched.
    """
    was_training = model.training
    model.eval()
    try:
        parts = [
            _search(model, chunk.detach(), alpha, beta, radius, max_iter, pixel_range, generator)
            for chunk in x.split(batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def critical_sample_ratio(model: nn.Module, x: torch.Tensor, **settings) -> float:
    """CSR: the fraction of points of x that LASS finds critical (settings as :func:`lass`)."""
    return float(lass(model, x, **settings)[1].float().mean())


def adversarial_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, weight: float, **settings
) -> torch.Tensor:
    """Adversarial training loss on LASS critical samples (thesis §3.5, "dropout + adversarial training").

    (1 - weight) * CE(model(x), y) + weight * CE(model(x_hat[c]), y[c]), where c are
    the batch's critical points and x_hat their adversarial points found by
    :func:`lass` with ``settings`` (default parameters otherwise), labelled with
    the TRUE labels. When no point is critical the loss is the clean loss alone.
    Both forward passes use the model's current mode (train mode while training).
    """
    clean = F.cross_entropy(model(x), y)
    x_hat, critical = lass(model, x, **settings)
    if weight == 0 or not bool(critical.any()):
        return clean
    return (1 - weight) * clean + weight * F.cross_entropy(model(x_hat[critical]), y[critical])
