"""The library anchor: zuko's MAF trained with naf-tabular's protocol, for rows beside our flows (extra ``flows``).

zuko (1.x) is the library of the study's oracle tests (tests/test_flows_oracle.py): small, maintained, plain
PyTorch modules, its MAF the canonical one (``zuko.flows.MAF``: MaskedAutoregressiveTransform with a monotonic
affine transformer, orders alternating natural / reversed, ReLU MADE, base N(0, I)). It is trained here one model
at a time, as a user of the library would, with our protocol around it: each seed's own initialisation and data
order (the minibatches naf-tabular's blocks use), Adam (torch.optim.Adam, the library's usual optimizer, at our
betas and eps), gradient-norm clipping, validation NLL every epoch, the best-validation checkpoint, and
maf_experiments' patience rule (stop when evaluations since the best exceed ``patience``). Test log-likelihoods in
float64, as ours.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.optim import ADAM_BETAS, ADAM_EPS

EVAL_CHUNK = 4096


def zuko_maf(dim: int, flows: int, hidden: int, hidden_layers: int, seed: int) -> torch.nn.Module:
    """zuko's MAF with ``flows`` transforms, each MADE ``hidden`` × ``hidden_layers``; initialised from ``seed``."""
    import zuko

    torch.manual_seed(int(seed))
    return zuko.flows.MAF(features=dim, transforms=int(flows), hidden_features=[int(hidden)] * int(hidden_layers))


def mean_log_prob(flow: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log q(x) per example (N,), in chunks, without gradients."""
    with torch.no_grad():
        return torch.cat([flow().log_prob(x[i:i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])


@dataclass
class LibraryFit:
    """The best-validation checkpoint and when it was reached (epochs counted from 1)."""

    best: torch.nn.Module
    best_val_nll: float
    best_epoch: int
    epochs_run: int


def fit_maf(flow: torch.nn.Module, train: torch.Tensor, val: torch.Tensor, minibatch: Callable[[int], torch.Tensor], *,
            lr: float, batch: int, max_epochs: int, patience: int, clip: float | None,
            on_epoch: Callable[[int, float], None] | None = None) -> LibraryFit:
    """Maximum likelihood on ``train`` by minibatches ``train[minibatch(step)]``; validation NLL after every epoch."""
    per_epoch = max(1, len(train) // batch)
    opt = torch.optim.Adam(flow.parameters(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    best, best_val, best_epoch, epoch = copy.deepcopy(flow), float("inf"), 0, 0
    for epoch in range(1, max_epochs + 1):
        for i in range(per_epoch):
            loss = -flow().log_prob(train[minibatch((epoch - 1) * per_epoch + i)]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(flow.parameters(), clip)
            opt.step()
        val_nll = float(-mean_log_prob(flow, val).double().mean())
        if val_nll < best_val:
            best, best_val, best_epoch = copy.deepcopy(flow), val_nll, epoch
        if on_epoch is not None:
            on_epoch(epoch, val_nll)
        if epoch - best_epoch > patience:
            break
    return LibraryFit(best=best, best_val_nll=best_val, best_epoch=best_epoch, epochs_run=epoch)


def best_log_prob(fit: LibraryFit, test: torch.Tensor) -> torch.Tensor:
    """log q(x) of the best checkpoint per test point (N,), in float64."""
    return mean_log_prob(copy.deepcopy(fit.best).double(), test.double())
