"""One flow trained the way NAF's maf_experiments.py trains it: the yardstick for :func:`core.flows.train.fit`.

Written like ``maf_experiments.model.train`` (CW-Huang/NAF) with torchkit/optim.py's Adam: one model (K = 1 of
model.py's stacked parameters), ``torch.optim.Adam`` (lr 1e-4, betas (0.9, 0.999)), ``clip_grad_norm_`` 5 on every
minibatch of 100 of a reshuffled training set, Polyak averages ``avg = polyak avg + (1 - polyak) p`` (from zeros)
after each step; after each epoch swap the averages in, compute the validation loss (mean NLL over all rows), save
the weights when it improves on the best, swap back, and stop when ``epoch - best_epoch > patience`` (30); return
the best weights. tests/test_flows_train.py checks that ``fit`` at K = 1 follows it step for step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.flows import model
from core.flows.spec import FlowSpec


@dataclass
class ReferenceResult:
    best_val: float
    best_epoch: int  # 1-based epoch of the best validation loss (0: none)
    epochs: int  # epochs run
    best_params: list[torch.Tensor]
    train_losses: list[float]  # every minibatch's mean loss, in order
    val_losses: list[float]  # every epoch's validation loss (Polyak weights when polyak > 0)


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch's minibatch indices: a fresh permutation cut into batch_size pieces (DataLoader(shuffle=True))."""
    return list(torch.randperm(n, generator=gen).split(batch_size))


def train_reference(spec: FlowSpec, seed: int, train_x: torch.Tensor, valid_x: torch.Tensor, epochs: int,
                    lr: float = 1e-4, clip: float = 5.0, batch_size: int = 100, polyak: float = 0.0, patience: int = 30,
                    shuffle_seed: int = 0, dtype=torch.float64) -> ReferenceResult:
    params = model.init_block(spec, [seed], dtype=dtype)
    optim = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    avg = [torch.zeros_like(p) for p in params] if polyak > 0 else None
    gen = torch.Generator().manual_seed(shuffle_seed)
    loss_of = lambda x: -model.log_prob(spec, params, x.to(dtype))[0]

    def swap():
        if avg is not None:
            with torch.no_grad():
                for p, a in zip(params, avg):
                    tmp = p.detach().clone()
                    p.copy_(a)
                    a.copy_(tmp)

    best_val, best_epoch, e = float("inf"), 0, 0
    best_params = [p.detach().clone() for p in params]
    train_losses, val_losses = [], []
    while e < epochs:
        for idx in epoch_batches(len(train_x), batch_size, gen):
            optim.zero_grad()
            loss = loss_of(train_x[idx]).mean()
            train_losses.append(loss.item())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            optim.step()
            if avg is not None:
                with torch.no_grad():
                    for p, a in zip(params, avg):
                        a.copy_(polyak * a + (1 - polyak) * p)
        swap()
        with torch.no_grad():
            loss_val = loss_of(valid_x).mean().item()
        val_losses.append(loss_val)
        if loss_val < best_val:
            best_params = [p.detach().clone() for p in params]
            best_val, best_epoch = loss_val, e + 1
        swap()
        e += 1
        if e - best_epoch > patience:  # maf_experiments.model.impatient
            break
    return ReferenceResult(best_val, best_epoch, e, best_params, train_losses, val_losses)
