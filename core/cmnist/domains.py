"""Colored MNIST (Arjovsky et al. 2019), exactly as in the IRM reference code.

- The source's first 5/6 of images (MNIST train: 0..49,999) are shuffled and
  used for training; the remaining 1/6 (50,000..59,999) form the test domain.
  Smaller sources (MNIST's test split, the embedded deformed digits) keep the same
  ratio; the embedded source orders its images so that the held-out 1/6 are
  drawn from source digits no training image comes from (core.cmnist.sources).
- 2x subsample to 14x14; binary label y = (digit < 5) flipped with prob. 0.25;
  colour = y XOR Bernoulli(e); the image goes into channel ``colour`` of two
  channels and the other channel is zero; pixels / 255.
- Train domain 1: even-indexed training images, e = 0.2; train domain 2:
  odd-indexed, e = 0.1; test domain: the held-out images, e = 0.9.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.data import ImageSource

TRAIN_FRACTION = 5 / 6
LABEL_NOISE = 0.25
TRAIN_COLOR_FLIPS = (0.2, 0.1)
TEST_COLOR_FLIP = 0.9


@dataclass(frozen=True)
class Domain:
    """One domain: inputs x (N, C, 14, 14) float in [0, 1], targets y (N, 1) float in {0, 1}."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    color: torch.Tensor  # (N,) the colour index each example got (for checks and reports)


@dataclass(frozen=True)
class Domains:
    """Training domains (the objective sees these), test domains (evaluation only) and held-out parts of the
    training domains (``val``, evaluation only: training-domain validation; empty unless :func:`hold_out` made them)."""

    train: list[Domain]
    test: list[Domain]
    val: list[Domain] = field(default_factory=list)


def hold_out(domains: Domains, fraction: float, seed: int) -> Domains:
    """Each training domain's examples split at random into a training part (same name) and a held-out part
    ``<name>_out`` of ``int(n * fraction)`` examples, as DomainBed's in/out splits (not in the IRM or REx code)."""
    rng = np.random.default_rng([seed, 1])
    train, val = [], []
    for d in domains.train:
        order = torch.from_numpy(rng.permutation(len(d.y)))
        out, keep = order[: int(len(d.y) * fraction)], order[int(len(d.y) * fraction):]
        train.append(Domain(d.name, d.x[keep], d.y[keep], d.color[keep]))
        val.append(Domain(f"{d.name}_out", d.x[out], d.y[out], d.color[out]))
    return Domains(train=train, test=domains.test, val=domains.val + val)


def train_count(n: int) -> int:
    """How many of a source's n images (the first ones) are training images: round(5/6 · n)."""
    return int(round(n * TRAIN_FRACTION))


def split_indices(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices of the first 5/6 of a source (training), and the held-out rest (test)."""
    n_train = train_count(n)
    return rng.permutation(n_train), np.arange(n_train, n)


def binary_labels(digits: np.ndarray, rng: np.random.Generator, noise: float = LABEL_NOISE) -> np.ndarray:
    """y = (digit < 5), each label flipped with probability ``noise``."""
    return (digits < 5).astype(np.int64) ^ (rng.random(len(digits)) < noise).astype(np.int64)


def colorize(
    images: np.ndarray,
    digits: np.ndarray,
    e: float,
    rng: np.random.Generator,
    label_noise: float = LABEL_NOISE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build one CMNIST domain from uint8 28x28 images: returns (x, y, colour).

    x is (N, 2, 14, 14) with the image in channel ``colour`` and zeros in the
    other; colour = y XOR Bernoulli(e).
    """
    y = binary_labels(digits, rng, label_noise)
    color = y ^ (rng.random(len(y)) < e).astype(np.int64)
    small = torch.from_numpy(np.ascontiguousarray(images[:, ::2, ::2])).float() / 255.0
    x = torch.zeros(len(y), 2, 14, 14)
    idx = torch.arange(len(y))
    color_t = torch.from_numpy(color)
    x[idx, color_t] = small
    return x, torch.from_numpy(y).float()[:, None], color_t


def build_cmnist(source: ImageSource, seed: int) -> Domains:
    """The standard Colored MNIST domains from ``source``; all randomness from ``seed``."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = split_indices(len(source.labels), rng)
    envs = [train_idx[0::2], train_idx[1::2]]
    train = []
    for i, (idx, e) in enumerate(zip(envs, TRAIN_COLOR_FLIPS)):
        x, y, c = colorize(source.images[idx], source.labels[idx], e, rng)
        train.append(Domain(f"train{i + 1}", x, y, c))
    x, y, c = colorize(source.images[test_idx], source.labels[test_idx], TEST_COLOR_FLIP, rng)
    return Domains(train=train, test=[Domain("test", x, y, c)])
