"""Colored MNIST with covariate shift (thesis §5.4.1, Figure 5.4; REx code ``covariate_shifts/``).

Built on the standard construction of :mod:`core.cmnist.domains` (same split, label
noise 0.25, colour = y XOR Bernoulli(e), e = 0.2 / 0.1 / 0.9, 2x subsample,
domain names ``train1``, ``train2``, ``test``). One shift parameter p in
[0, 0.5] gives the proportion q of each domain: q1 = p/(1+p) for train1,
q2 = 1/(1+p) for train2 (p = 0: disjoint support), q = 0.5 for test.

- ``class``: keep round(q·n) of the images with clean label y = 0 (digit >= 5)
  and round((1−q)·n) of those with y = 1, drawn without replacement; then
  label noise and colour as in standard CMNIST.
- ``digit``: drop digits 0 and 5; keep round(q·n) of each of the groups
  {1,2} and {6,7}, round((1−q)·n) of {3,4} and {8,9}; label still digit < 5.
- ``color``: no subsampling; 4 channels R0 R1 G0 G1 (channel = 2·colour +
  shade); colour 0 takes shade 0 with probability q (else shade 1), colour 1
  takes shade 1 with probability q (else shade 0). ``Domain.color`` stays the
  colour (0/1); the shade is the channel the image is in, minus 2·colour.

Differences from the REx reference code (the spec wins where they disagree):
- p is restricted to [0, 0.5] (the spec); the reference accepts p in [0, 1],
  where p = 1 means no shift (q1 = q2 = 0.5).
- Subsampled counts use round(q·n); the reference truncates, int(q·n).
- A subsample is a uniformly random subset drawn from ``rng``, and kept
  images stay in the domain's (shuffled) order; the reference takes the first
  int(q·n) of each group (random for the shuffled training images, but the
  first in source order for the held-out test images) and concatenates the
  groups one after the other (irrelevant to full-batch training).
- The reference draws everything from the global torch/numpy generators; here
  all randomness comes from ``np.random.default_rng(seed)``.
"""
from __future__ import annotations

import numpy as np
import torch

from core.cmnist.domains import TEST_COLOR_FLIP, TRAIN_COLOR_FLIPS, Domain, Domains, colorize, split_indices
from core.data import ImageSource

VARIANTS = ("class", "digit", "color")
TEST_PROPORTION = 0.5
MAX_SHIFT_P = 0.5

# (digits, True when the group keeps a fraction q, False when it keeps 1 - q)
_DIGIT_GROUPS = (((1, 2), True), ((3, 4), False), ((6, 7), True), ((8, 9), False))


def domain_proportions(p: float) -> tuple[float, float]:
    """The proportions (q1, q2) = (p/(1+p), 1/(1+p)) of the two training domains."""
    return p / (1.0 + p), 1.0 / (1.0 + p)


def kept_count(q: float, n: int) -> int:
    """How many of n images a group keeps at fraction q: round(q*n)."""
    return int(round(q * n))


def _subsample(groups: list[tuple[np.ndarray, float]], rng: np.random.Generator) -> np.ndarray:
    """Positions kept: for each (boolean mask, fraction), kept_count() of the masked positions, in order."""
    kept = []
    for mask, q in groups:
        members = np.flatnonzero(mask)
        kept.append(rng.permutation(members)[: kept_count(q, len(members))])
    return np.sort(np.concatenate(kept))


def _class_keep(digits: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    clean = digits < 5
    return _subsample([(~clean, q), (clean, 1.0 - q)], rng)


def _digit_keep(digits: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    return _subsample([(np.isin(digits, group), q if with_q else 1.0 - q) for group, with_q in _DIGIT_GROUPS], rng)


def _shaded(images: np.ndarray, digits: np.ndarray, e: float, q: float, rng: np.random.Generator):
    """Standard CMNIST colouring, then each image moved to channel 2*colour + shade of 4."""
    x2, y, color = colorize(images, digits, e, rng)
    took_q = torch.from_numpy(rng.random(len(y)) < q)
    shade = torch.where(color == 0, (~took_q).long(), took_q.long())
    idx = torch.arange(len(y))
    x = torch.zeros(len(y), 4, *x2.shape[2:], dtype=torch.float32)
    x[idx, 2 * color + shade] = x2[idx, color]
    return x, y, color


def build_shifted_cmnist(source: ImageSource, variant: str, p: float, seed: int) -> Domains:
    """Covariate-shifted CMNIST domains (train1, train2, test) from ``source``; randomness from ``seed``.

    ``variant`` is one of ``VARIANTS``; ``p`` in [0, 0.5]. Raises ValueError
    for an unknown variant, p out of range, or a domain left with no images.
    x is float32 (N, C, 14, 14) with C = 4 for ``color`` and 2 otherwise; y is float32 (N, 1).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown covariate-shift variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not 0.0 <= p <= MAX_SHIFT_P:
        raise ValueError(f"shift p must lie in [0, {MAX_SHIFT_P}], got {p}")
    rng = np.random.default_rng(seed)
    train_idx, test_idx = split_indices(len(source.labels), rng)
    q1, q2 = domain_proportions(p)
    plan = [
        ("train1", train_idx[0::2], TRAIN_COLOR_FLIPS[0], q1),
        ("train2", train_idx[1::2], TRAIN_COLOR_FLIPS[1], q2),
        ("test", test_idx, TEST_COLOR_FLIP, TEST_PROPORTION),
    ]
    built = []
    for name, idx, e, q in plan:
        digits = source.labels[idx]
        if variant == "color":
            x, y, c = _shaded(source.images[idx], digits, e, q, rng)
        else:
            keep = (_class_keep if variant == "class" else _digit_keep)(digits, q, rng)
            x, y, c = colorize(source.images[idx[keep]], digits[keep], e, rng)
        if len(y) == 0:
            raise ValueError(f"domain {name} of variant {variant!r} at p={p} is empty for source {source.name}")
        built.append(Domain(name, x, y, c))
    return Domains(train=built[:2], test=built[2:])
