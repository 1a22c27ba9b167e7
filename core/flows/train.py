"""fit: train a stacked block of K flows with one batched Adam, per-model clipping, Polyak averages, early stopping.

The loop torchkit/optim.py + NAF maf_experiments.model.train run for one model, for K at once:
- loss: ``loss_fn(step)`` returns (K,) losses; the gradient of their sum is each model's own gradient.
- clip: each model's gradients scaled by min(1, clip / (||g_k|| + 1e-6)), ||g_k|| over all of model k's tensors
  (torch.nn.utils.clip_grad_norm_ per model).
- step: core.optim.BatchedAdam (per-model lr; stopped models frozen by its ``active`` mask).
- Polyak (torchkit optim.Adam ``polyak``): after each step avg <- polyak avg + (1 - polyak) p, avg starting at 0 as
  torchkit's ``exp_avg_param = zeros``; evaluation swaps the averages in (optim.swap), evaluates, keeps a copy of
  the evaluated (averaged) weights when the metric improves, and swaps back.
- early stopping (maf_experiments.impatient): after each evaluation model k stops when
  evals_so_far - best_eval_index > patience (evaluations counted from 1, best_eval_index 0 before any best);
  a stopped model's ``active`` flag goes False and it keeps its best copy.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from core.optim import ADAM_BETAS, ADAM_EPS, BatchedAdam


@dataclass
class FitResult:
    """Per-model outcome: ``best_metric`` (K,) lowest eval metric (last loss without eval_fn), ``best_step`` (K,)
    the step it was reached after, ``best_params`` stacked copies of those weights, ``stopped`` (K,) stopped early,
    ``steps_done`` (K,) optimizer steps each model took, ``history`` [(step, metrics (K,))] per evaluation."""

    best_metric: torch.Tensor
    best_step: torch.Tensor
    best_params: list[torch.Tensor]
    stopped: torch.Tensor
    steps_done: torch.Tensor
    history: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def clip_per_model(grads: Sequence[torch.Tensor], clip: float) -> torch.Tensor:
    """Scale each model's gradients in place to norm <= clip (clip_grad_norm_'s coefficient); returns the norms (K,)."""
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads], 1)
    norms = torch.linalg.vector_norm(norms, dim=1)  # norm of the per-tensor norms, as clip_grad_norm_
    coef = (clip / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(list(grads), [coef.view((-1,) + (1,) * (g.dim() - 1)).to(g.dtype) for g in grads])
    return norms


@torch.no_grad()
def _swap(params: Sequence[torch.Tensor], avg: Sequence[torch.Tensor]) -> None:
    for p, a in zip(params, avg):
        tmp = p.detach().clone()
        p.copy_(a)
        a.copy_(tmp)


def fit(params: list[torch.Tensor], loss_fn: Callable[[int], torch.Tensor], steps: int, lr, clip: float | None = 5.0,
        polyak: float = 0.0, eval_fn: Callable[[], torch.Tensor] | None = None, eval_every: int = 100,
        patience: int | None = None, on_eval: Callable[[int, torch.Tensor], None] | None = None,
        betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> FitResult:
    """Train the stacked ``params`` in place for ``steps`` steps (fewer when every model stopped).

    ``lr``: a float or K values. ``eval_fn()`` -> (K,) metric, lower is better, run under no_grad with the Polyak
    averages swapped in, after every ``eval_every``-th step and after the last step; ``on_eval(step, metrics)`` is
    called with it. ``patience`` (evaluations) stops a model whose metric has not improved for more than that many.
    On return ``params`` hold the last (not averaged) weights; the best ones are in ``FitResult.best_params``.
    """
    k = params[0].shape[0]
    device = params[0].device
    opt = BatchedAdam(params, lr, betas, eps)
    active = torch.ones(k, dtype=torch.bool, device=device)
    avg = [torch.zeros_like(p) for p in params] if polyak > 0 else None
    best_metric = torch.full((k,), float("inf"), dtype=torch.float64, device=device)
    best_step = torch.full((k,), -1, dtype=torch.long, device=device)
    best_params = [p.detach().clone() for p in params]
    best_eval = torch.zeros(k, dtype=torch.long, device=device)
    steps_done = torch.zeros(k, dtype=torch.long, device=device)
    history: list[tuple[int, torch.Tensor]] = []
    n_evals = 0
    for step in range(steps):
        if not bool(active.any()):
            break
        losses = loss_fn(step)
        grads = list(torch.autograd.grad(losses.sum(), params))
        if clip is not None:
            clip_per_model(grads, clip)
        all_active = bool(active.all())
        opt.step(grads, active=None if all_active else active)  # the unmasked update is cheaper
        steps_done += active.long()
        if avg is not None:
            with torch.no_grad():
                for p, a in zip(params, avg):
                    keep = active.view((-1,) + (1,) * (p.dim() - 1))
                    a.copy_(torch.where(keep, polyak * a + (1 - polyak) * p, a))
        last = step == steps - 1
        if eval_fn is None:
            if last:
                best_metric = losses.detach().double()
                best_step.fill_(step)
                best_params = [p.detach().clone() for p in params]
            continue
        if (step + 1) % eval_every != 0 and not last:
            continue
        if avg is not None:
            _swap(params, avg)
        with torch.no_grad():
            metric = eval_fn().detach().double().to(device)
        n_evals += 1
        history.append((step, metric.cpu()))
        better = active & (metric < best_metric)
        best_metric = torch.where(better, metric, best_metric)
        best_step = torch.where(better, torch.full_like(best_step, step), best_step)
        best_eval = torch.where(better, torch.full_like(best_eval, n_evals), best_eval)
        for b, p in zip(best_params, params):
            b.copy_(torch.where(better.view((-1,) + (1,) * (p.dim() - 1)), p.detach(), b))
        if avg is not None:
            _swap(params, avg)
        if on_eval is not None:
            on_eval(step, metric)
        if patience is not None:
            active = active & ~(n_evals - best_eval > patience)
    return FitResult(best_metric=best_metric, best_step=best_step, best_params=best_params, stopped=~active,
                     steps_done=steps_done, history=history)
