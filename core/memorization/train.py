"""The plain training loop for one model of the memorization study.

One call trains one model with minibatch SGD (or Adam) and reports, after every
epoch, accuracy and loss on the whole training and validation sets (eval mode),
and optionally the critical sample ratio on the first ``csr_examples``
validation examples (thesis: 500). The seed fixes the data order, dropout /
noise draws and the LASS noise; the model's initial weights are the caller's
(build it with ``seed=`` in :mod:`.models`). The caller's global RNG state is
left untouched.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet
from .lass import MAX_ITER, adversarial_loss, critical_sample_ratio
from .models import make_optimizer, step_schedule

__all__ = ["stream_seed", "epoch_batches", "evaluate", "train", "epochs_to_fit"]


def stream_seed(seed: int, stream: str) -> int:
    """An independent 64-bit seed for one random stream ("order", "noise", "lass") of a run seed."""
    words = [int(seed)] + [ord(c) for c in stream]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's minibatch indices: a fresh permutation of 0..n-1 split into batches."""
    return list(torch.randperm(n, generator=generator).split(batch_size))


@torch.no_grad()
def evaluate(model: nn.Module, images: ImageSet, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode on ``images``; the mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, loss = 0, 0.0
    for x, y in zip(images.x.split(batch_size), images.y.split(batch_size)):
        logits = model(x.to(device))
        y = y.to(device)
        correct += int((logits.argmax(dim=1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    return correct / len(images), loss / len(images)


def train(
    model: nn.Module,
    train_set: ImageSet,
    val_set: ImageSet,
    *,
    epochs: int,
    batch_size: int = 128,
    kind: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    lr_step: int | None = None,
    lr_gamma: float = 0.5,
    seed: int = 0,
    csr_examples: int = 0,
    adversarial_weight: float = 0.0,
    lass_iters: int = MAX_ITER,
    stop_when_fit: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns one metrics dict per epoch (also passed to ``on_epoch``).

    Each dict: epoch (1-based), lr, train_acc, train_loss, val_acc, val_loss, and
    csr when ``csr_examples`` > 0. ``adversarial_weight`` > 0 trains on the mix of
    :func:`.lass.adversarial_loss`. ``lass_iters`` caps the LASS
    search of both (default 100, the reference code's). ``stop_when_fit`` ends after the first epoch
    with 100% training accuracy.
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, kind, lr, momentum, weight_decay)
    schedule = step_schedule(optimizer, lr_step, lr_gamma)
    order = torch.Generator().manual_seed(stream_seed(seed, "order"))
    search = torch.Generator(device=device).manual_seed(stream_seed(seed, "lass"))
    csr_x = val_set.x[:csr_examples].to(device)
    history: list[dict] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stream_seed(seed, "noise"))
        for epoch in range(1, epochs + 1):
            model.train()
            current_lr = optimizer.param_groups[0]["lr"]
            for index in epoch_batches(len(train_set), batch_size, order):
                x, y = train_set.x[index].to(device), train_set.y[index].to(device)
                if adversarial_weight > 0:
                    loss = adversarial_loss(model, x, y, weight=adversarial_weight, generator=search, max_iter=lass_iters)
                else:
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
            train_acc, train_loss = evaluate(model, train_set)
            val_acc, val_loss = evaluate(model, val_set)
            row = {"epoch": epoch, "lr": current_lr, "train_acc": train_acc, "train_loss": train_loss,
                   "val_acc": val_acc, "val_loss": val_loss}
            if csr_examples > 0:
                row["csr"] = critical_sample_ratio(model, csr_x, generator=search, max_iter=lass_iters)
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if stop_when_fit and train_acc == 1.0:
                break
    return history


def epochs_to_fit(history: list[dict]) -> int | None:
    """Time to convergence (Fig 3.6): the first epoch with 100% training accuracy, None if never."""
    return next((row["epoch"] for row in history if row["train_acc"] == 1.0), None)
