"""The CMNIST MLP, stored as a block of K independent models with stacked weights.

Model k is ``in -> h_k -> h_k -> 1`` with ReLU, Xavier-uniform weights and zero
biases (IRM reference). A block pads every model to the block's largest hidden
size H with zero weights; padded units stay exactly zero through training
(their gradients, Adam moments and L2 terms are all zero), so model k computes
the same function as if it were trained alone. K = 1 is the ordinary MLP.
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


def init_block(in_dim: int, hiddens: list[int], seeds: list[int]) -> list[torch.Tensor]:
    """Stacked parameters [W1 (K,in,H), b1 (K,1,H), W2 (K,H,H), b2 (K,1,H), W3 (K,H,1), b3 (K,1,1)].

    Model k is initialised from ``seeds[k]`` alone, independent of the block.
    """
    k, width = len(hiddens), max(hiddens)
    w1, w2, w3 = torch.zeros(k, in_dim, width), torch.zeros(k, width, width), torch.zeros(k, width, 1)
    for i, (h, seed) in enumerate(zip(hiddens, seeds)):
        g = torch.Generator().manual_seed(int(seed))
        w1[i, :, :h] = _xavier(in_dim, h, g)
        w2[i, :h, :h] = _xavier(h, h, g)
        w3[i, :h, :] = _xavier(h, 1, g)
    b1, b2, b3 = torch.zeros(k, 1, width), torch.zeros(k, 1, width), torch.zeros(k, 1, 1)
    return [w1, b1, w2, b2, w3, b3]


def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, 1) of every model in the block for shared inputs x (N, in).

    The first layer of all K models is one matrix product (x is shared); a
    single model runs as plain fused ``addmm`` products.
    """
    w1, b1, w2, b2, w3, b3 = params
    k, d, width = w1.shape
    if k == 1:
        h = torch.addmm(b1[0], x, w1[0]).relu_()
        h = torch.addmm(b2[0], h, w2[0]).relu_()
        return torch.addmm(b3[0], h, w3[0]).unsqueeze(0)
    h = torch.addmm(b1.reshape(1, k * width), x, w1.transpose(0, 1).reshape(d, k * width)).relu_()
    h = h.view(-1, k, width).transpose(0, 1)
    h = torch.baddbmm(b2, h, w2).relu_()
    return torch.baddbmm(b3, h, w3)


def squared_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Per-model sum of squared parameters, (K,) (the explicit L2 term)."""
    return sum(p.pow(2).flatten(1).sum(dim=1) for p in params)
