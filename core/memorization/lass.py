"""Langevin adversarial sample search (LASS, thesis Algorithm 1) and the critical sample ratio.

A point x is *critical* when some x_hat with ||x_hat - x||_inf <= r has a
different predicted class (thesis eq. 3.1). LASS searches for x_hat, for all
points of a set at once:

    x_hat <- x_hat + alpha * sign(grad) + beta * eta,   eta ~ N(0, 1) per element,
    x_hat <- project_box(x_hat, x, r)   (and, optionally, the pixel range; see below),

where grad is the gradient of the cross-entropy of model(x_hat) against the
model's CURRENT predicted label of the original x (ascent: away from it). A
point becomes critical as soon as its prediction differs from that label and
is not moved afterwards (Algorithm 1 returns the x_hat where it flipped).

What the reference code does (Arpit's search as ported in
xingjunm/dimensionality-driven-learning ``lass_tf.py``, used by its
``callback_util.py``), and the defaults here follow:

- at most ``max_iter`` = 100 iterations over the whole set;
- the search of the set stops early once an iteration adds fewer than
  ``min_new`` = 20 new critical points (``converged_label_thres``);
  ``min_new=0`` searches until ``max_iter`` or until every point is critical;
- no clipping to a pixel range (its ``clip_min``/``clip_max`` are -inf/+inf
  and no caller sets them), only the projection onto the r-box;
- alpha, beta, r = 0.25, 0.2, 0.3 on the 0-255 scale, divided by 255 for data in [0, 1].

``pixel_range=(lo, hi)`` additionally keeps x_hat in the pixel range where
that stays inside the r-box: each coordinate's box is
[max(x - r, min(lo, x)), min(x + r, max(hi, x))], so a coordinate of x outside
the range (randX noise) may move towards the range but never further out, and
never leaves its r-box (clamping the box itself to [lo, hi] would collapse it
onto the range's edge, outside the r-box).

The model runs in eval mode during the search (no dropout, BatchNorm running
statistics) and gets its previous mode back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.memorization import hparams

__all__ = ["ALPHA", "BETA", "RADIUS", "MAX_ITER", "MIN_NEW", "box", "lass", "critical_sample_ratio", "adversarial_loss"]

# lass_tf.py's values (core.memorization.hparams), the pixel-scale ones divided by 255 for data in [0, 1]
ALPHA = hparams.LASS_ALPHA / 255.0  # gradient-sign step
BETA = hparams.LASS_BETA / 255.0  # noise scale
RADIUS = hparams.LASS_RADIUS / 255.0  # L_inf box radius
MAX_ITER = hparams.LASS_ITERS  # iter_max
MIN_NEW = hparams.LASS_MIN_NEW  # converged_label_thres, the early stop of the search


def box(x: torch.Tensor, radius: float, pixel_range: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate (lower, upper) bounds of x_hat: the r-box of x, within ``pixel_range`` where the r-box allows."""
    lower, upper = x - radius, x + radius
    if pixel_range is not None:
        lo, hi = pixel_range
        lower = torch.maximum(lower, x.clamp(max=lo))  # max(x - r, min(lo, x))
        upper = torch.minimum(upper, x.clamp(min=hi))  # min(x + r, max(hi, x))
    return lower, upper


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(chunk).argmax(dim=1) for chunk in x.split(batch_size)])


def _step(model, point, label, alpha, beta, lower, upper, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One LASS step on a chunk of active points: (moved points, their new predictions)."""
    point = point.detach().requires_grad_(True)
    loss = F.cross_entropy(model(point), label, reduction="sum")
    (grad,) = torch.autograd.grad(loss, point)
    eta = torch.randn(point.shape, generator=generator, device=generator.device if generator else point.device)
    moved = torch.minimum(torch.maximum(point.detach() + alpha * grad.sign() + beta * eta.to(point.device), lower), upper)
    with torch.no_grad():
        return moved, model(moved).argmax(dim=1)


def lass(
    model: nn.Module,
    x: torch.Tensor,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    radius: float = RADIUS,
    max_iter: int = MAX_ITER,
    min_new: int = MIN_NEW,
    pixel_range: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search every point of x for an adversarial x_hat; returns (x_hat, critical mask (N,) bool).

    For critical points x_hat is the first point found whose prediction differs;
    for the others it is where the search ended (always inside the box of
    :func:`box`). ``alpha``, ``beta`` and ``radius`` are on the scale of x.
    Each iteration moves every point not yet critical; the search ends after
    ``max_iter`` iterations, when every point is critical, or when an iteration
    found fewer than ``min_new`` new critical points (0: never early).
    ``generator`` makes the noise reproducible. Points are pushed through the
    model in chunks of ``batch_size`` (memory only: the result does not depend
    on it); gradients of the model's parameters are untouched.
    """
    was_training = model.training
    model.eval()
    try:
        x = x.detach()
        label = _predict(model, x, batch_size)
        lower, upper = box(x, radius, pixel_range)
        x_hat, critical = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(max_iter):
            active = (~critical).nonzero().squeeze(1)
            if len(active) == 0:
                break
            found = 0
            for index in active.split(batch_size):
                moved, predicted = _step(model, x_hat[index], label[index], alpha, beta, lower[index], upper[index], generator)
                x_hat[index] = moved
                flipped = predicted != label[index]
                critical[index] = flipped
                found += int(flipped.sum())
            if found < min_new:
                break
    finally:
        model.train(was_training)
    return x_hat, critical


def critical_sample_ratio(model: nn.Module, x: torch.Tensor, **settings) -> float:
    """CSR: the fraction of points of x that LASS finds critical (settings as :func:`lass`)."""
    return float(lass(model, x, **settings)[1].float().mean())


def adversarial_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, weight: float, **settings
) -> tuple[torch.Tensor, int]:
    """Adversarial training loss on LASS critical samples (thesis §3.5, "dropout + adversarial training").

    (1 - weight) * CE(model(x), y) + weight * CE(model(x_hat[c]), y[c]), where c are
    the batch's critical points and x_hat their adversarial points found by
    :func:`lass` with ``settings`` (its defaults otherwise: the reference's, as the
    thesis' "LASS with default parameters"), labelled with the TRUE labels. When
    no point is critical the loss is the clean loss alone. Both forward passes
    use the model's current mode (train mode while training). Returns the loss
    and how many points of the batch were critical.
    """
    clean = F.cross_entropy(model(x), y)
    if weight == 0:
        return clean, 0
    x_hat, critical = lass(model, x, **settings)
    found = int(critical.sum())
    if not found:
        return clean, 0
    return (1 - weight) * clean + weight * F.cross_entropy(model(x_hat[critical]), y[critical]), found
