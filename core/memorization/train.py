"""The plain training loop for one model of the memorization study.

One call trains one model with minibatch SGD (or Adam) and reports, after every
epoch, accuracy and loss on the whole training and validation sets (eval mode),
and optionally the critical sample ratio on ``csr_examples`` validation
examples drawn afresh at random (without replacement) every epoch, as the
reference code does (xingjunm/dimensionality-driven-learning
``callback_util.py``: 500 of the held-out set per epoch). The seed fixes the
data order, dropout / noise draws, the CSR draws and the LASS noise; the
model's initial weights are the caller's (build it with ``seed=`` in
:mod:`.models`). The caller's global RNG state is left untouched.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet
from .lass import MAX_ITER, MIN_NEW, adversarial_loss, critical_sample_ratio
from .models import make_optimizer, step_schedule

__all__ = ["stream_seed", "epoch_batches", "evaluate", "train", "epochs_to_fit"]


def stream_seed(seed: int, stream: str) -> int:
    """An independent 64-bit seed for one random stream ("order", "noise", "lass", "csr") of a run seed."""
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
    lass_min_new: int = MIN_NEW,
    stop_when_fit: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns one metrics dict per epoch (also passed to ``on_epoch``).

    Each dict: epoch (1-based), lr, train_acc, train_loss, val_acc, val_loss, and
    csr when ``csr_examples`` > 0 (a fresh random draw of that many validation
    examples each epoch). ``adversarial_weight`` > 0 trains on the mix of
    :func:`.lass.adversarial_loss` and adds ``adv_critical``: the fraction of the
    epoch's training examples LASS found critical (those the extra term trains on). ``lass_iters`` and ``lass_min_new`` set the
    LASS search of both (defaults: the reference code's 100 iterations at most,
    stop once an iteration finds fewer than 20 new critical points).
    ``stop_when_fit`` ends after the first epoch with 100% training accuracy.
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, kind, lr, momentum, weight_decay)
    schedule = step_schedule(optimizer, lr_step, lr_gamma)
    order = torch.Generator().manual_seed(stream_seed(seed, "order"))
    search = torch.Generator(device=device).manual_seed(stream_seed(seed, "lass"))
    draws = torch.Generator().manual_seed(stream_seed(seed, "csr"))
    if csr_examples > len(val_set):
        raise ValueError(f"csr_examples={csr_examples} is more than the {len(val_set)} validation examples")
    lass_settings = dict(generator=search, max_iter=lass_iters, min_new=lass_min_new)
    history: list[dict] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stream_seed(seed, "noise"))
        for epoch in range(1, epochs + 1):
            model.train()
            current_lr = optimizer.param_groups[0]["lr"]
            critical = 0
            for index in epoch_batches(len(train_set), batch_size, order):
                x, y = train_set.x[index].to(device), train_set.y[index].to(device)
                if adversarial_weight > 0:
                    loss, found = adversarial_loss(model, x, y, weight=adversarial_weight, **lass_settings)
                    critical += found
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
            if adversarial_weight > 0:
                row["adv_critical"] = critical / len(train_set)
            if csr_examples > 0:
                index = torch.randperm(len(val_set), generator=draws)[:csr_examples]
                row["csr"] = critical_sample_ratio(model, val_set.x[index].to(device), **lass_settings)
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if stop_when_fit and train_acc == 1.0:
                break
    return history


def epochs_to_fit(history: list[dict]) -> int | None:
    """Time to convergence (Fig 3.6): the first epoch with 100% training accuracy, None if never."""
    return next((row["epoch"] for row in history if row["train_acc"] == 1.0), None)
