"""DomainBed's MNIST ConvNet (``networks.MNIST_CNN`` + the linear ``Classifier``), one model or K stacked as grouped convolutions.

MNIST_CNN: Conv 3x3 C -> 64, 64 -> 128 (stride 2), 128 -> 128, 128 -> 128,
padding 1, each followed by ReLU then GroupNorm(8 groups); global mean pool to
128 features; a linear classifier to the classes. ``width`` scales the
channels (1.0 is DomainBed's; a deviation the cheap presets name), rounded
to multiples of 8 so that GroupNorm(8) applies.

K models are stacked without BatchNorm's coupling between examples (there is
none: GroupNorm normalises each example on its own): their inputs side by
side as K x C channels, every convolution one grouped convolution
(``groups = K``), every GroupNorm one GroupNorm of 8K groups (model k's
channels are the contiguous block k, so its 8 groups are groups 8k .. 8k+7),
the classifier one batched product. Model k computes exactly its own
network's function; its initial weights are those of :class:`MnistCNN` built
under ``torch.manual_seed(seed_k)`` (PyTorch's default initialisation, as in
DomainBed).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = (64, 128, 128, 128)
STRIDES = (1, 2, 1, 1)
GROUPS = 8
GN_EPS = 1e-5  # nn.GroupNorm's default


def channels(width: float = 1.0) -> tuple[int, ...]:
    """The four convolutions' output channels at ``width`` (multiples of 8, at least 8)."""
    return tuple(max(GROUPS, int(round(c * width / GROUPS)) * GROUPS) for c in CHANNELS)


class MnistCNN(nn.Module):
    """DomainBed's featurizer and classifier for 28 x 28 inputs, as one module (its parameter order is DomainBed's)."""

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        c = channels(width)
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, 1, padding=1)
        self.conv2 = nn.Conv2d(c[0], c[1], 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c[1], c[2], 3, 1, padding=1)
        self.conv4 = nn.Conv2d(c[2], c[3], 3, 1, padding=1)
        self.bn0, self.bn1, self.bn2, self.bn3 = (nn.GroupNorm(GROUPS, n) for n in c)
        self.classifier = nn.Linear(c[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip((self.conv1, self.conv2, self.conv3, self.conv4), (self.bn0, self.bn1, self.bn2, self.bn3)):
            x = norm(F.relu(conv(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def init_params(in_channels: int, num_classes: int, seed: int, width: float = 1.0) -> list[torch.Tensor]:
    """One model's initial parameters (:class:`MnistCNN` under ``torch.manual_seed(seed)``), in module order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        module = MnistCNN(in_channels, num_classes, width)
    return [p.detach().clone() for p in module.parameters()]


def stack_params(per_model: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """K models' parameter lists -> one list of (K, ...) tensors."""
    return [torch.stack(tensors) for tensors in zip(*per_model)]


def stacked_forward(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, classes) of K stacked models on their own inputs ``x`` (N, K, C, 28, 28).

    ``params`` are :func:`stack_params` of :func:`init_params` lists: four
    convolutions (weight, bias), four GroupNorms (weight, bias), the classifier
    (weight, bias).
    """
    n, k = x.shape[:2]
    h = x.reshape(n, k * x.shape[2], *x.shape[3:])
    convs, norms, (w_out, b_out) = params[0:8], params[8:16], params[16:18]
    for i, stride in enumerate(STRIDES):
        w, b = convs[2 * i], convs[2 * i + 1]
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), stride=stride, padding=1, groups=k)
        h = F.group_norm(F.relu(h), GROUPS * k, norms[2 * i].reshape(-1), norms[2 * i + 1].reshape(-1), GN_EPS)
    features = h.mean(dim=(2, 3)).view(n, k, -1).transpose(0, 1)  # (K, N, features)
    return torch.baddbmm(b_out.unsqueeze(1), features, w_out.transpose(1, 2))


def activation_bytes_per_example(width: float = 1.0, in_channels: int = 2, dtype_bytes: int = 4) -> int:
    """Estimated training memory of one example in one model: each layer's output kept three times (conv, ReLU, norm)."""
    c = channels(width)
    floats = in_channels * 784 + 3 * (c[0] * 784 + (c[1] + c[2] + c[3]) * 196)
    return int(floats * dtype_bytes * 1.5)  # allocator slack and the backward's temporaries
