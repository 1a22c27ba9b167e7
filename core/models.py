"""The CMNIST MLP, as a block of K independent models trained side by side.

Model k is ``in -> h_k -> h_k -> 1`` with ReLU, Xavier-uniform weights and zero
biases (IRM reference). Each model keeps its own tensors at its own size (no
padding) and shares the block's inputs, loss graph and optimizer loop.
"""
from __future__ import annotations

import math

import torch

IMAGE_PIXELS = 14 * 14


def input_dim(channels: int, grayscale: bool) -> int:
    """Flattened input size: channels*14*14, or 14*14 for the grayscale oracle (channels summed)."""
    return IMAGE_PIXELS if grayscale else channels * IMAGE_PIXELS


def flatten_inputs(x: torch.Tensor, grayscale: bool) -> torch.Tensor:
    """(N, C, 14, 14) -> (N, C*196), or (N, 196) with channels summed for the grayscale oracle."""
    return x.sum(dim=1).flatten(1) if grayscale else x.flatten(1)


def _xavier(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound


def init_model(in_dim: int, hidden: int, seed: int) -> list[torch.Tensor]:
    """[W1 (in,h), b1 (1,h), W2 (h,h), b2 (1,h), W3 (h,1), b3 (1,1)] initialised from ``seed`` alone."""
    g = torch.Generator().manual_seed(int(seed))
    w1, w2, w3 = _xavier(in_dim, hidden, g), _xavier(hidden, hidden, g), _xavier(hidden, 1, g)
    return [w1, torch.zeros(1, hidden), w2, torch.zeros(1, hidden), w3, torch.zeros(1, 1)]


def init_block(in_dim: int, hiddens: list[int], seeds: list[int]) -> list[list[torch.Tensor]]:
    """One parameter list per model (see :func:`init_model`); model k depends on ``seeds[k]`` only."""
    return [init_model(in_dim, h, s) for h, s in zip(hiddens, seeds)]


def forward(block: list[list[torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, 1) of every model in the block for shared inputs x (N, in).

    Each model runs as three fused ``addmm`` products on contiguous tensors;
    one concatenated first-layer product for all K models measured slower on
    CPU at MNIST size (strided slices into a (N, sum h) activation).
    """
    outputs = []
    for w1, b1, w2, b2, w3, b3 in block:
        h = torch.addmm(b1, x, w1).relu_()
        h = torch.addmm(b2, h, w2).relu_()
        outputs.append(torch.addmm(b3, h, w3))
    return torch.stack(outputs)


def squared_norm(block: list[list[torch.Tensor]]) -> torch.Tensor:
    """Per-model sum of squared parameters, (K,) (the explicit L2 term)."""
    return torch.stack([sum(p.pow(2).sum() for p in params) for params in block])
