"""Many small MLP runs in one block: K seeds of one setting trained side by side.

Run k of a block is exactly the run that :func:`.train.train` would make with
``mlp(in_dim, width, classes, depth, seed=seeds[k])`` and ``seed=seeds[k]``:
the same initial weights, the same data order, the same SGD updates (up to
float summation order; tested). The K weight sets are stacked, W (K, in, out),
and a step multiplies each run's own minibatch by its own weights with one
batched matmul (``torch.baddbmm``). The backward pass is written out (a ReLU
MLP with a mean cross-entropy per run) and each weight's update is fused into
its gradient product (``W.baddbmm_(h^T, delta, alpha=-lr)`` for plain SGD):
no autograd graph, no gradient tensors, one pass over each weight per step.
On a CPU this removes K-fold Python and kernel-launch overhead, which bounds
tiny nets (16 to 256 units on 1,000 examples), and the gradient's extra
memory traffic, which bounds wide ones.

Used for the easy-examples study (Fig 3.1: 100 one-epoch runs, per-example
misclassification), capacity grids (Fig 3.5, 3.6: group runs by width with
:func:`train_grid`) and anything else that needs many unregularized MLP runs.
Dropout, noise and BatchNorm are not supported here (use the plain loop).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .data import ImageSet
from .models import mlp_weights
from .train import epoch_batches, stream_seed

__all__ = ["BlockResult", "init_block", "block_forward", "train_seeds", "train_grid", "misclassification_rate"]


@dataclass
class BlockResult:
    """The runs of one width: per-epoch metrics per seed, and final per-example training errors."""

    width: int
    seeds: list[int]
    history: list[dict] = field(default_factory=list)  # {"epoch", "train_acc": [K], "train_loss": [K], "val_acc": [K], "val_loss": [K]}
    wrong: torch.Tensor | None = None  # (K, N) bool: training examples run k misclassifies after its last epoch

    def epochs_to_fit(self) -> list[int | None]:
        """Per seed, the first epoch with 100% training accuracy (None if never)."""
        return [next((r["epoch"] for r in self.history if r["train_acc"][k] == 1.0), None) for k in range(len(self.seeds))]

    def per_seed(self) -> list[dict]:
        """One row per seed: seed, width, final metrics and epochs_to_fit."""
        last, fit = self.history[-1], self.epochs_to_fit()
        keys = ("train_acc", "train_loss", "val_acc", "val_loss")
        return [{"seed": s, "width": self.width, "epochs": last["epoch"], **{k: last[k][i] for k in keys}, "epochs_to_fit": fit[i]}
                for i, s in enumerate(self.seeds)]


def init_block(in_dim: int, width: int, classes: int, depth: int, seeds: Sequence[int]) -> list[torch.Tensor]:
    """Stacked initial weights [W1 (K, in, w), b1 (K, 1, w), ..., W_out (K, w, classes), b_out (K, 1, classes)].

    Slice k equals the (transposed) Linear weights of ``mlp(..., seed=seeds[k])``.
    """
    runs = [mlp_weights(in_dim, width, classes, depth, s) for s in seeds]
    stacked = []
    for layer in zip(*runs):
        stacked.append(torch.stack([weight.t() for weight, _ in layer]).contiguous())
        stacked.append(torch.stack([bias[None] for _, bias in layer]).contiguous())
    return stacked


def block_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits (K, B, classes) of all K runs; x is (K, B, D) (one batch per run) or (B, D) (shared).

    Shared inputs go through the first layer as one (B, D) x (D, K * width) product.
    """
    w1, b1 = params[0], params[1]
    if x.dim() == 3:
        h = torch.baddbmm(b1, x, w1)
    else:
        k, d, width = w1.shape
        h = (x @ w1.transpose(0, 1).reshape(d, k * width)).view(len(x), k, width).transpose(0, 1) + b1
    for i in range(2, len(params), 2):
        h = torch.baddbmm(params[i + 1], h.relu(), params[i])
    return h


@torch.no_grad()
def _metrics(params: list[torch.Tensor], images: ImageSet, budget: int = 2**24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per run: accuracy (K,), mean loss (K,) and the wrong-prediction mask (K, N) on ``images``.

    Examples go through in chunks of about ``budget`` hidden activations (K * chunk * width).
    """
    x, y = images.x.flatten(1).to(params[0].device), images.y.to(params[0].device)
    k, _, width = params[0].shape
    chunk = max(1, budget // (k * width))
    wrong, loss = [], []
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        logits = block_forward(params, xs)
        wrong.append(logits.argmax(dim=2) != ys)
        loss.append(F.cross_entropy(logits.transpose(1, 2), ys.expand(len(logits), -1), reduction="none"))
    wrong_all, loss_all = torch.cat(wrong, dim=1), torch.cat(loss, dim=1)
    return 1.0 - wrong_all.float().mean(dim=1), loss_all.mean(dim=1), wrong_all


@torch.no_grad()
def _sgd_step(params: list[torch.Tensor], buffers: list, x: torch.Tensor, y: torch.Tensor,
              lr: float, momentum: float, weight_decay: float) -> None:
    """One SGD step of every run on its own batch x (K, B, D), y (K, B): torch.optim.SGD's update of each run's mean CE.

    Gradient of run k: backprop of mean_b CE(logits_kb, y_kb) through the ReLU layers; then, as torch.optim.SGD,
    g += weight_decay * W; buf = g (first step) or momentum * buf + g; W -= lr * buf (plain SGD fuses W -= lr * g).
    """
    inputs, h = [], x
    for i in range(0, len(params) - 2, 2):
        inputs.append(h)
        h = torch.baddbmm(params[i + 1], h, params[i]).relu_()
    inputs.append(h)
    delta = torch.softmax(torch.baddbmm(params[-1], h, params[-2]), dim=2)
    delta.scatter_add_(2, y.unsqueeze(2), torch.full(y.shape + (1,), -1.0, dtype=delta.dtype, device=delta.device))
    delta.div_(x.shape[1])  # d(mean CE)/d(logits)
    fused = momentum == 0 and weight_decay == 0
    for layer in range(len(inputs) - 1, -1, -1):
        w, b, h = params[2 * layer], params[2 * layer + 1], inputs[layer]
        below = torch.bmm(delta, w.transpose(1, 2)).mul_(h > 0) if layer > 0 else None  # uses W before its update
        for j, (p, grad) in enumerate(((w, None), (b, delta.sum(dim=1, keepdim=True)))):
            slot = 2 * layer + j
            if fused:
                if grad is None:
                    p.baddbmm_(h.transpose(1, 2), delta, alpha=-lr)
                else:
                    p.sub_(grad, alpha=lr)
                continue
            grad = torch.bmm(h.transpose(1, 2), delta) if grad is None else grad
            if weight_decay:
                grad.add_(p, alpha=weight_decay)
            if momentum:
                buffers[slot] = grad if buffers[slot] is None else buffers[slot].mul_(momentum).add_(grad)
                grad = buffers[slot]
            p.sub_(grad, alpha=lr)
        delta = below


def _train_block(train_set, val_set, width, seeds, epochs, batch_size, lr, momentum, weight_decay, depth, stop_when_fit, device, on_epoch):
    x, y = train_set.x.flatten(1).to(device), train_set.y.to(device)
    classes = max(train_set.classes, val_set.classes)
    params = [p.to(device) for p in init_block(x.shape[1], width, classes, depth, seeds)]
    buffers: list = [None] * len(params)
    orders = [torch.Generator().manual_seed(stream_seed(s, "order")) for s in seeds]
    result = BlockResult(width, list(seeds))
    for epoch in range(1, epochs + 1):
        batches = [epoch_batches(len(x), batch_size, g) for g in orders]
        for step in zip(*batches):
            index = torch.stack(step).to(device)  # (K, B): run k's batch at this step
            _sgd_step(params, buffers, x[index], y[index], lr, momentum, weight_decay)
        train_acc, train_loss, wrong = _metrics(params, train_set)
        val_acc, val_loss, _ = _metrics(params, val_set) if len(val_set) else (train_acc * 0, train_loss * 0, None)
        row = {"epoch": epoch, "train_acc": train_acc.tolist(), "train_loss": train_loss.tolist(),
               "val_acc": val_acc.tolist(), "val_loss": val_loss.tolist()}
        result.history.append(row)
        result.wrong = wrong.cpu()
        if on_epoch is not None:
            on_epoch({"width": width, "seeds": list(seeds), **row})
        if stop_when_fit and bool((train_acc == 1.0).all()):
            break
    return result


def train_seeds(
    train_set: ImageSet,
    val_set: ImageSet,
    *,
    width: int,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.01,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    depth: int = 2,
    stop_when_fit: bool = False,
    block_size: int | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
) -> BlockResult:
    """Train one MLP per seed (same width and settings) as blocks of at most ``block_size`` runs.

    ``stop_when_fit`` ends a block once all its runs reach 100% training
    accuracy (each run's epochs_to_fit is still its own). The history rows of
    blocks are concatenated per epoch (a block that stopped early contributes
    its last row to later epochs). ``wrong`` is each run's per-example training
    error after its last epoch.
    """
    seeds = list(seeds)
    size = block_size or len(seeds)
    args = (epochs, batch_size, lr, momentum, weight_decay, depth, stop_when_fit, torch.device(device), on_epoch)
    parts = [_train_block(train_set, val_set, width, seeds[i : i + size], *args) for i in range(0, len(seeds), size)]
    if len(parts) == 1:
        return parts[0]
    merged = BlockResult(width, seeds, wrong=torch.cat([p.wrong for p in parts]))
    for e in range(max(len(p.history) for p in parts)):
        rows = [p.history[min(e, len(p.history) - 1)] for p in parts]
        merged.history.append({"epoch": e + 1, **{k: sum((r[k] for r in rows), []) for k in rows[0] if k != "epoch"}})
    return merged


def train_grid(train_set: ImageSet, val_set: ImageSet, *, widths: Sequence[int], seeds: Sequence[int], **settings) -> dict[int, BlockResult]:
    """Every (width, seed) run, grouped into one block per width (settings as :func:`train_seeds`)."""
    return {w: train_seeds(train_set, val_set, width=w, seeds=seeds, **settings) for w in widths}


def misclassification_rate(wrong: torch.Tensor) -> torch.Tensor:
    """Fig 3.1: per-example misclassification rate over runs, (K, N) bool -> (N,) float."""
    return wrong.float().mean(dim=0)
