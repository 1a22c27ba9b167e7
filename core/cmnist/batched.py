"""Blocks of K configurations as batched kernels: stacked weights, ``baddbmm`` products, one batched Adam.

:func:`core.cmnist.train.train_block` trains a block either as a Python loop over
per-model tensors (:class:`core.cmnist.train.LoopModels`: each model at its own padded width,
one ``addmm`` per layer and model) or, here, as one set of batched kernels
(:class:`StackedModels`): the K models' tensors stacked into (K, in, H),
(K, 1, H), (K, H, H), (K, 1, H), (K, H, 1), (K, 1, 1) with H the widest
padded width of the group, every layer one ``baddbmm`` over the K models, and
Adam (:class:`core.optim.BatchedAdam`) one update over the six stacked tensors with a learning rate per model.

Padding is exact (see :func:`core.cmnist.models.pad_hidden`): a model's units beyond
its own width have zero weights and biases, hence zero activations, zero
gradients (the L2 term included) and zero Adam moments, and stay exactly zero;
each model computes its own width's function. Model k's initial weights are
:func:`core.cmnist.models.init_model`'s for its own seed, so a model's numbers do not
depend on the block (equal to a run alone, to float tolerance: the products
sum in a different order).

Which models share a group: :func:`group_by_width` (one group padded to the
widest, or one group per padded width), then :func:`split_by_memory` cuts a
group whose activations (:func:`activation_bytes`) would not fit a memory
budget into sub-blocks that run one after another within each step.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from core.cmnist import models
from core.optim import BatchedAdam

# Live float32 (K, N, H) tensors at the peak of one training step, counted from the graph: forward keeps
# both hidden layers for backward (the first layer's segment products exist next to their concatenation
# for a moment); backward adds the gradients of a hidden layer before and after its ReLU and of the layer
# below: about 4-5, rounded up for the allocator's slack. benchmarks/gpu_search.py prints CUDA's measured
# peak next to this estimate.
ACTIVATION_FACTOR = 6.0


def tf32_enabled(device: torch.device, setting: bool | None = None) -> bool:
    """Whether float32 products use TF32: ``setting`` (None: on) on CUDA devices, always False elsewhere."""
    return torch.device(device).type == "cuda" and (True if setting is None else bool(setting))


class tf32_mode:
    """Context manager: TF32 products (CUDA matmul and cuDNN) on or off inside, the previous settings restored after."""

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled)

    def __enter__(self):
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.enabled
        torch.backends.cudnn.allow_tf32 = self.enabled
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
        return False


def activation_bytes(k: int, n: int, width: int, dtype_bytes: int = 4, factor: float = ACTIVATION_FACTOR) -> int:
    """Estimated peak activation memory of one training step of ``k`` models of padded ``width`` on ``n`` examples."""
    return int(math.ceil(k * n * width * dtype_bytes * factor))


BUCKET_RATIO = 1.25  # grouping "bucket": a group's widest padded width at most this times its narrowest


def group_by_width(widths: Sequence[int], grouping: str = "pad") -> list[list[int]]:
    """Model indices per group: "pad" one group (padded to the widest), "width" one group per padded width,
    "bucket" groups of padded widths within ``BUCKET_RATIO`` of each other (the widths sorted, then cut).

    Padding a block of the random-search space's widths, int(2^U(6, 9)), to its widest computes on average
    2.6x (K = 8) to 3.5x (K = 64) the products of the models' own widths; buckets bring that to 1.07x (K = 8,
    4.5 groups on average) to 1.16x (K = 64, 8 groups), at the cost of more, smaller batched products. Groups keep the block order within them and come in order of
    their first model.
    """
    if grouping == "pad":
        return [list(range(len(widths)))] if len(widths) else []
    if grouping == "width":
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(widths):
            groups.setdefault(models.padded_width(w), []).append(i)
        return list(groups.values())
    if grouping == "bucket":
        buckets: list[list[int]] = []
        for i in sorted(range(len(widths)), key=lambda j: (models.padded_width(widths[j]), j)):
            if not buckets or models.padded_width(widths[i]) > BUCKET_RATIO * models.padded_width(widths[buckets[-1][0]]):
                buckets.append([])
            buckets[-1].append(i)
        return sorted((sorted(b) for b in buckets), key=lambda b: b[0])
    raise ValueError(f"unknown grouping {grouping!r} (choose from pad, width, bucket)")


def split_by_memory(group: Sequence[int], widths: Sequence[int], n: int, budget_bytes: float | None) -> list[list[int]]:
    """``group`` cut, in order, into sub-blocks whose :func:`activation_bytes` (at their widest width) fit the budget.

    A model that does not fit alone gets a sub-block of its own (nothing smaller can run); no budget: one block.
    """
    if budget_bytes is None:
        return [list(group)] if len(group) else []
    out: list[list[int]] = []
    current: list[int] = []
    for i in group:
        trial = current + [i]
        width = max(models.padded_width(widths[j]) for j in trial)
        if current and activation_bytes(len(trial), n, width) > budget_bytes:
            out.append(current)
            current = [i]
        else:
            current = trial
    if current:
        out.append(current)
    return out


def plan_block(widths: Sequence[int], n: int, grouping: str = "pad", budget_bytes: float | None = None) -> list[list[int]]:
    """The sub-blocks a block of models with these hidden widths trains as: grouped, then split to fit the budget."""
    return [sub for group in group_by_width(widths, grouping) for sub in split_by_memory(group, widths, n, budget_bytes)]


def stack_models(in_dim: int, hiddens: Sequence[int], seeds: Sequence[int], width: int | None = None) -> list[torch.Tensor]:
    """[W1 (K,in,H), b1 (K,1,H), W2 (K,H,H), b2 (K,1,H), W3 (K,H,1), b3 (K,1,1)]: :func:`core.cmnist.models.init_model`
    of each (hidden, seed), zero-padded to ``width`` (default: the widest padded width)."""
    width = width or max(models.padded_width(h) for h in hiddens)
    per_model = [models.pad_hidden(models.init_model(in_dim, h, s), width) for h, s in zip(hiddens, seeds)]
    return [torch.stack(tensors) for tensors in zip(*per_model)]


def first_layer(x: models.Inputs, w1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """(K, N, H): x @ w1[k] + b1[k] for every model; in channel form each segment against its channel's rows."""
    k = w1.shape[0]
    if not x.segments:
        return torch.baddbmm(b1, x.pixels.expand(k, *x.pixels.shape), w1)
    size = x.pixels.shape[1]
    parts = [torch.baddbmm(b1, x.pixels[a:b].expand(k, b - a, size), w1[:, c * size : (c + 1) * size]) for a, b, c in x.segments]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def stacked_forward(params: Sequence[torch.Tensor], x: models.Inputs) -> torch.Tensor:
    """Logits (K, N, 1) of the stacked models for shared inputs x."""
    w1, b1, w2, b2, w3, b3 = params
    h = first_layer(x, w1, b1).relu_()
    h = torch.baddbmm(b2, h, w2).relu_()
    return torch.baddbmm(b3, h, w3)


class StackedModels:
    """K models as stacked tensors padded to one width, each layer one batched product; Adam one batched update."""

    batched = True

    def __init__(self, in_dim: int, hiddens: Sequence[int], seeds: Sequence[int], lrs: Sequence[float], device):
        self.params = [p.to(device).requires_grad_() for p in stack_models(in_dim, hiddens, seeds)]
        self.adam = BatchedAdam(self.params, [float(lr) for lr in lrs])

    def forward(self, x: models.Inputs) -> torch.Tensor:
        return stacked_forward(self.params, x)

    def squared_norm(self) -> torch.Tensor:
        return sum(p.pow(2).sum(dim=(1, 2)) for p in self.params)

    def update(self, grads) -> None:
        """One Adam step of every model with ``grads`` (one per stacked tensor)."""
        self.adam.step(grads)

    def unstacked(self) -> list[list[torch.Tensor]]:
        """Each model's tensors (views, padded width), as :func:`core.cmnist.models.forward` takes them."""
        return [[p[i] for p in self.params] for i in range(self.params[0].shape[0])]
