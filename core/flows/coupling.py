"""Flows of Bayesian Hypernetworks' hypernet, stacked over K: RealNVP coupling, IAF layer, elementwise linear, flip.

Ported from BHN's modules.py (CW-Huang/BayesianHypernet, Theano/Lasagne), delta = 0.001 there:
- :func:`coupling_forward` (CoupledDenseLayer): x = [x1, x2] with x1 the first D//2 features;
  h = relu(x1 W1 + b1), s = exp(h W21 + b21) + 0.001, m = h W22 + b22; y = [x1, s x2 + m], log|det| = sum log s.
  Init W ~ N(0, 1e-4), b = 0 (lasagne init.Normal(0.0001), init.Constant(0)).
- :func:`iaf_forward` (IAFDenseLayer, L = 1): a weight-normed MADE (relu hidden units) gives mean and pre-std per
  feature; z = mean + (exp(pre) + 0.001) x, log|det| = sum log std. Each output unit's weight column normalised over its
  inputs, scale g, bias b (weightnormdot); init u, g ~ N(0, 1e-4), b = 0. Masks: made.py's natural order (BHN
  shuffles MADE's order with a fixed seed; any fixed order is an IAF).
- :func:`linear_forward` (LinearFlowLayer): y = x (exp(w) + 0.001) + b, w ~ N(-7, 0.01), b ~ N(0, 0.01).
- :func:`flip` (ReverseLayer): reversed feature order, log|det| = 0.
Parameters are lists of (K, ...) tensors, configuration k drawn from ``seeds[k]`` alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.flows import made

BHN_DELTA = 0.001


def _stack(seeds: list[int], draw, device=None, dtype=torch.float32) -> list[torch.Tensor]:
    per_model = [draw(torch.Generator().manual_seed(int(s))) for s in seeds]
    return [torch.stack(ts).to(device=device, dtype=dtype).requires_grad_() for ts in zip(*per_model)]


def _normal(gen: torch.Generator, shape: tuple[int, ...], std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean


def init_coupling(dim: int, hidden: int, seeds: list[int], device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """[W1 (K, D//2, H), b1 (K, 1, H), W21 (K, H, D - D//2), b21, W22 (K, H, D - D//2), b22]."""
    d1, d2 = dim // 2, dim - dim // 2
    zeros = lambda n: torch.zeros(1, n, dtype=torch.float64)
    return _stack(seeds, lambda g: [_normal(g, (d1, hidden), 1e-4), zeros(hidden), _normal(g, (hidden, d2), 1e-4), zeros(d2),
                                    _normal(g, (hidden, d2), 1e-4), zeros(d2)], device, dtype)


def coupling_forward(params: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (K, N, D) -> (y, log|det| (K, N)); the first D//2 features pass through and condition the rest."""
    w1, b1, w21, b21, w22, b22 = params
    d1 = x.shape[-1] // 2
    x1, x2 = x[..., :d1], x[..., d1:]
    h = torch.relu(torch.baddbmm(b1, x1, w1))
    s = torch.exp(torch.baddbmm(b21, h, w21)) + BHN_DELTA
    m = torch.baddbmm(b22, h, w22)
    return torch.cat([x1, s * x2 + m], -1), torch.log(s).sum(-1)


def init_iaf(dim: int, hidden: int, seeds: list[int], hidden_layers: int = 1, device=None, dtype=torch.float32
             ) -> list[torch.Tensor]:
    """MADE [V, g, b] per layer, output channels (mean, pre-std) per feature."""
    sizes = [dim] + [hidden] * hidden_layers + [2 * dim]

    def draw(g: torch.Generator) -> list[torch.Tensor]:
        out = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            out += [_normal(g, (n_in, n_out), 1e-4), _normal(g, (1, n_out), 1e-4), torch.zeros(1, n_out, dtype=torch.float64)]
        return out
    return _stack(seeds, draw, device, dtype)


def iaf_forward(params: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mean(x_<i) + (exp(pre(x_<i)) + 0.001) x_i, log|det| = sum log std (K, N)."""
    k, n, dim = x.shape
    hidden, hidden_layers = params[0].shape[-1], len(params) // 3 - 1
    layer_masks = made.masks(dim, hidden, hidden_layers, 2, device=x.device, dtype=x.dtype)
    out = made.made_forward(params, layer_masks, x, activation=F.relu).view(k, n, dim, 2)
    std = torch.exp(out[..., 1]) + BHN_DELTA
    return out[..., 0] + std * x, torch.log(std).sum(-1)


def init_linear(dim: int, seeds: list[int], device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """[w (K, 1, D), b (K, 1, D)]: w ~ N(-7, 0.01), b ~ N(0, 0.01)."""
    return _stack(seeds, lambda g: [_normal(g, (1, dim), 0.01, -7.0), _normal(g, (1, dim), 0.01)], device, dtype)


def linear_forward(params: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x (exp(w) + 0.001) + b, log|det| = sum log scale, broadcast to (K, N)."""
    w, b = params
    s = torch.exp(w) + BHN_DELTA
    return x * s + b, torch.log(s).sum(-1).expand(x.shape[:-1])


def flip(x: torch.Tensor) -> torch.Tensor:
    """Reversed feature order (BHN ReverseLayer, torchkit FlipFlow); volume preserving."""
    return x.flip(-1)
