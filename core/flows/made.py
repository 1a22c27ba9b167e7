"""MADE conditioner, stacked: K weight-normed masked MLPs of one shape, ELU hidden activation.

Ported from torchkit/iaf_modules.py (cMADE, get_masks) and torchkit/nn.py (CWNlinear), under the density
experiments' zero context (NAF maf_experiments.MAF.density feeds ``context = 0``): CWNlinear's
``cscale(c) * (x @ (V / ||V||) * mask) + cbias(c)`` is then ``g * (x @ W) + b`` with one free scale ``g`` and bias
``b`` per output unit (cscale.bias, cbias.bias; the context weights get no gradient). Each layer is stacked as
V (K, in, out), g (K, 1, out), b (K, 1, out); ``V`` is normalised over its inputs (torchkit normalises each
output row of its (out, in) direction), then masked.

Degrees (torchkit get_rank / get_mask_from_ranks): input feature i has degree ``order[i]`` (natural order
``0..D-1``, torchkit's ``fixed_order=True``); hidden unit h has degree ``h mod (D-1)`` (torchkit draws the same
cyclic ranks, drops the surplus of the last cycle at random and shuffles: a permutation of exchangeable units, so
only the dropped surplus differs; we keep the cycle deterministic, shared by the block); a hidden unit sees inputs
of degree <= its own, output feature j sees hidden units of degree < order[j]. Output unit ``j*C + c`` is channel
c of feature j (torchkit's ``view(-1, dim, num_outlayers)``). D = 1: every mask is zero (torchkit), the
outputs are the biases: an unconditional transformer.

With a context (FlowSpec.context = c > 0) each layer also holds CWNlinear's context weights Ws, Wb (K, c, out):
scale g + ctx Ws and bias b + ctx Wb per example. torchkit's energy fitting samples with context = ones (c = 1,
BaseFlow.sample): then g and Ws (b and Wb) are two parameters whose sum acts, as there (Adam moves the sum twice as
fast as one parameter would); the density experiments' context = zeros is FlowSpec.context = 0.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def degrees(dim: int, hidden: int, hidden_layers: int, order: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """Degrees of the inputs, then of each hidden layer (long tensors)."""
    d_in = torch.arange(dim) if order is None else torch.as_tensor(order)
    return [d_in] + [torch.arange(hidden) % max(dim - 1, 1) for _ in range(hidden_layers)]


def random_order(dim: int, seed: int) -> tuple[int, ...]:
    """torchkit's ``fixed_order=False`` input order (get_masks_all: ``rx = get_rank(dx, dx)``, a uniformly random
    permutation of range(dim)), drawn from ``seed`` instead of NumPy's global state: a FlowSpec.order."""
    gen = torch.Generator().manual_seed(9_176_513 * int(seed) + 23)
    return tuple(int(i) for i in torch.randperm(dim, generator=gen))


@functools.lru_cache(maxsize=64)
def _masks(dim: int, hidden: int, hidden_layers: int, channels: int, order: tuple[int, ...] | None, device=None,
           dtype=torch.float32) -> list[torch.Tensor]:
    degs = degrees(dim, hidden, hidden_layers, order)
    masks = [(d_out[None, :] >= d_in[:, None]) for d_in, d_out in zip(degs[:-1], degs[1:])]
    out = (degs[0][None, :] > degs[-1][:, None])  # (hidden, dim): strictly lower degree
    masks.append(out.repeat_interleave(channels, dim=1))  # column j*C + c
    if dim == 1:
        masks = [torch.zeros_like(m) for m in masks]
    return [m.to(device=device, dtype=dtype) for m in masks]


def masks(dim: int, hidden: int, hidden_layers: int, channels: int, order: tuple[int, ...] | None = None,
          device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """(in, out) 0/1 masks of the hidden_layers + 1 layers: (D, H), (H, H)..., (H, D*C)."""
    return _masks(dim, hidden, hidden_layers, channels, order, None if device is None else torch.device(device), dtype)


def init_made(dim: int, hidden: int, hidden_layers: int, channels: int, gen: torch.Generator, context: int = 0
              ) -> list[torch.Tensor]:
    """One model's [V, g, b] (+ [Ws, Wb] with a context) per layer (float64, unstacked), torchkit's CWNlinear init:
    V ~ N(0, 0.001); g = cscale.bias and b = cbias.bias ~ U(-1/sqrt(c), 1/sqrt(c)) (nn.Linear(c, out)'s default bias
    init, c = max(context, 1)); Ws = cscale.weight and Wb = cbias.weight (c, out) ~ N(0, 0.001)."""
    sizes = [dim] + [hidden] * hidden_layers + [dim * channels]
    bound = 1.0 / math.sqrt(max(context, 1))
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        v = torch.randn(n_in, n_out, generator=gen, dtype=torch.float64) * 0.001
        g = (torch.rand(1, n_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(1, n_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        params += [v, g, b]
        if context:
            params += [torch.randn(context, n_out, generator=gen, dtype=torch.float64) * 0.001 for _ in range(2)]
    return params


def made_forward(params: list[torch.Tensor], layer_masks: list[torch.Tensor], x: torch.Tensor, activation=F.elu,
                 context: torch.Tensor | None = None) -> torch.Tensor:
    """x (K, N, D) -> (K, N, D*C): masked weight-normed layers, ``activation`` (ELU) between them (not after the last).

    With a context c (K, N, ctx) (params hold [V, g, b, Ws, Wb] per layer) each layer is CWNlinear's
    ``(g + c Ws) * (x @ W) + (b + c Wb)``, W = V/||V|| masked; without one, ``x @ (g W) + b``."""
    h = x
    n_layers = len(layer_masks)
    per = len(params) // n_layers
    for i, mask in enumerate(layer_masks):
        v, g, b = params[per * i: per * i + 3]
        if context is None:
            w = v * mask * (g / v.pow(2).sum(1, keepdim=True).sqrt())  # (K, in, out): g V/||V|| per output, masked
            h = torch.baddbmm(b, h, w)
        else:
            ws, wb = params[per * i + 3: per * i + 5]
            w = v * mask / v.pow(2).sum(1, keepdim=True).sqrt()
            h = torch.addcmul(torch.baddbmm(b, context, wb), torch.bmm(h, w), torch.baddbmm(g, context, ws))
        if i < n_layers - 1:
            h = activation(h)
    return h
