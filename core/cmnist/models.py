"""The CMNIST MLP, as a block of K independent models trained side by side.

Model k is ``in -> h_k -> h_k -> 1`` with ReLU, Xavier-uniform weights and zero
biases (IRM reference). Each model keeps its own tensors at its own size (no
padding) and shares the block's inputs, loss graph and optimizer loop.

Colored MNIST puts each image in one channel and zeros in the others, so the
first layer only needs the active channel's rows of W1: :func:`channel_inputs`
groups the examples by channel, and the first layer then multiplies each
group's 196 pixels by that channel's 196 rows of W1 (the same sums without
the zero terms: 1/C of the dense first-layer work, forward and backward).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IMAGE_PIXELS = 14 * 14


def input_dim(channels: int, grayscale: bool) -> int:
    """Flattened input size: channels*14*14, or 14*14 for the grayscale oracle (channels summed)."""
    return IMAGE_PIXELS if grayscale else channels * IMAGE_PIXELS


def flatten_inputs(x: torch.Tensor, grayscale: bool) -> torch.Tensor:
    """(N, C, 14, 14) -> (N, C*196), or (N, 196) with channels summed for the grayscale oracle."""
    return x.sum(dim=1).flatten(1) if grayscale else x.flatten(1)


@dataclass(frozen=True)
class Inputs:
    """A batch of flattened inputs for :func:`forward`.

    Dense: ``pixels`` is (N, in) and ``segments`` is empty. Channel form:
    ``pixels`` is (N, 196), the active channel of each example, and
    ``segments`` lists (start, stop, channel): rows start..stop-1 live in that channel.
    """

    pixels: torch.Tensor
    segments: tuple[tuple[int, int, int], ...] = ()

    def to(self, device: torch.device) -> "Inputs":
        return Inputs(self.pixels.to(device), self.segments)


def _active_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: which channels of each example of x (N, C, 14, 14) hold a non-zero pixel."""
    return x.flatten(2).ne(0).any(dim=2)


def channel_order(x: torch.Tensor) -> torch.Tensor | None:
    """Row order grouping x (N, C, 14, 14) by its one active channel, or None when some row uses two channels.

    The order is a stable sort by channel (all-zero rows count as channel 0).
    """
    active = _active_channels(x)
    if x.shape[1] < 2 or bool((active.sum(dim=1) > 1).any()):
        return None
    return torch.sort(active.float().argmax(dim=1), stable=True).indices


def channel_inputs(x: torch.Tensor) -> Inputs:
    """The channel form of x (N, C, 14, 14) whose rows are already grouped by channel (see :func:`channel_order`)."""
    channel = _active_channels(x).float().argmax(dim=1)
    pixels = x[torch.arange(len(x)), channel].flatten(1)
    segments, start = [], 0
    for c, count in zip(*torch.unique_consecutive(channel, return_counts=True)):
        segments.append((start, start + int(count), int(c)))
        start += int(count)
    return Inputs(pixels, tuple(segments))


def _xavier(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound


def init_model(in_dim: int, hidden: int, seed: int) -> list[torch.Tensor]:
    """[W1 (in,h), b1 (1,h), W2 (h,h), b2 (1,h), W3 (h,1), b3 (1,1)] initialised from ``seed`` alone."""
    g = torch.Generator().manual_seed(int(seed))
    w1, w2, w3 = _xavier(in_dim, hidden, g), _xavier(hidden, hidden, g), _xavier(hidden, 1, g)
    return [w1, torch.zeros(1, hidden), w2, torch.zeros(1, hidden), w3, torch.zeros(1, 1)]


HIDDEN_MULTIPLE = 8  # BLAS kernels run full-width vector tiles: hidden 390 -> 392 measured ~1.3x faster per product


def padded_width(hidden: int, multiple: int = HIDDEN_MULTIPLE) -> int:
    """``hidden`` rounded up to a multiple of ``multiple``."""
    return -(-hidden // multiple) * multiple


def pad_hidden(params: list[torch.Tensor], width: int) -> list[torch.Tensor]:
    """The model with zero hidden units appended up to ``width`` in both hidden layers.

    Exact, not approximate: a zero unit has zero pre-activation, so ReLU
    outputs 0 and every gradient into or out of it is 0; its weights get zero
    gradients (also from the L2 term) and Adam leaves zero parameters with
    zero moments at exactly 0. The model computes its own width's function.
    """
    w1, b1, w2, b2, w3, b3 = params
    extra = width - w1.shape[1]
    if extra == 0:
        return params
    pad = torch.nn.functional.pad
    return [pad(w1, (0, extra)), pad(b1, (0, extra)), pad(w2, (0, extra, 0, extra)), pad(b2, (0, extra)),
            pad(w3, (0, 0, 0, extra)), b3]


def init_block(in_dim: int, hiddens: list[int], seeds: list[int]) -> list[list[torch.Tensor]]:
    """One parameter list per model (see :func:`init_model`), hidden layers zero-padded to :func:`padded_width`.

    Model k depends on ``seeds[k]`` only; its first ``hiddens[k]`` units are :func:`init_model`'s.
    """
    return [pad_hidden(init_model(in_dim, h, s), padded_width(h)) for h, s in zip(hiddens, seeds)]


def first_layer(x: Inputs, w1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """x @ w1 + b1 (before the ReLU); in channel form, each segment against its channel's rows of w1."""
    if not x.segments:
        return torch.addmm(b1, x.pixels, w1)
    size = x.pixels.shape[1]
    parts = [torch.addmm(b1, x.pixels[a:b], w1[c * size : (c + 1) * size]) for a, b, c in x.segments]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def forward(block: list[list[torch.Tensor]], x: Inputs) -> torch.Tensor:
    """Logits (K, N, 1) of every model in the block for shared inputs x (N rows).

    Each model runs as fused ``addmm`` products on contiguous tensors;
    one concatenated first-layer product for all K models measured slower on
    CPU at MNIST size (strided slices into a (N, sum h) activation).
    """
    outputs = []
    for w1, b1, w2, b2, w3, b3 in block:
        h = first_layer(x, w1, b1).relu_()
        h = torch.addmm(b2, h, w2).relu_()
        outputs.append(torch.addmv(b3.view(1), h, w3.view(-1)).unsqueeze(-1))
    return torch.stack(outputs)


def squared_norm(block: list[list[torch.Tensor]]) -> torch.Tensor:
    """Per-model sum of squared parameters, (K,) (the explicit L2 term)."""
    return torch.stack([sum(p.pow(2).sum() for p in params) for params in block])
