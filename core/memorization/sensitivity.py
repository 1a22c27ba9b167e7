"""Loss-sensitivity by unrolled SGD (thesis §3.3.2, Figures 3.3 and 3.4), and the Gini coefficient.

Definitions used here (the thesis text leaves L_t loosely specified):

- theta_0 are the model's parameters; theta_t = theta_{t-1} - lr * grad CE(theta_{t-1}; batch_t)
  are t plain SGD steps on the training examples x (N, ...), batches given as index tensors.
- L_t is the AVERAGE cross-entropy at theta_t over a fixed probe set, by default the
  whole training set ("the effect of each sample on the average loss"). The probe
  inputs are constants: x influences L_t only INDIRECTLY, through the updates it
  took part in ("the parameter update from training on x influences all future L_t
  indirectly", §3.3.2). An example not yet used by step t has g^t_x = 0.
- g^t_x = ||dL_t / dx||_1 (the thesis reports the l1 norm; ``norm`` picks another),
  computed by back-propagating through the unrolled steps (Maclaurin et al. 2015).
  The loss-sensitivity g_bar_x is the mean of g^t_x over the measured steps t.
- Class-specific: L_t(y=i) is class i's term of the probe loss, i.e. the sum of the
  cross-entropies of probe examples with label i divided by the probe size (so the
  terms add up to L_t). The per-class matrix (Fig 3.4) has rows i = the class of the
  loss term and columns j = the class of the training example x:
  cell (i, j) = mean over training examples x of class j of ||dL_t(y=i) / dx||_1.

The model must be a pure function of its parameters (no dropout, no BatchNorm):
the paper's setting is a 2-layer MLP of 16 units on 1000 14x14 MNIST digits.

:func:`unrolled_sensitivity_block` measures K such MLPs (seeds) at once: their
weights stacked as in :mod:`.seeds`, each run with its own SGD batches and its
own copy of the inputs, so one backward pass gives every run's dL^k_t/dx (the
runs never interact); equal to :func:`unrolled_sensitivity` per run (tested).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .seeds import block_forward

__all__ = ["sgd_batches", "unroll", "unrolled_gradient", "unrolled_sensitivity", "unrolled_sensitivity_block", "gini",
           "per_class_matrix"]

Params = dict[str, torch.Tensor]


def sgd_batches(n: int, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """Index tensors of the SGD batches: a fresh seeded permutation of 0..n-1 per epoch."""
    g = torch.Generator().manual_seed(int(seed))
    return [b for _ in range(epochs) for b in torch.randperm(n, generator=g).split(batch_size)]


def unroll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: Sequence[torch.Tensor], lr: float) -> list[Params]:
    """[theta_0, ..., theta_T]: plain SGD on (x, y), differentiable w.r.t. x (and theta_0).

    The graph is kept (create_graph=True), so any function of theta_t can be
    back-propagated to x. ``model`` itself is not modified.
    """
    params: Params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    trajectory = [params]
    for index in batches:
        loss = F.cross_entropy(functional_call(model, params, (x[index],)), y[index])
        grads = torch.autograd.grad(loss, tuple(params.values()), create_graph=True)
        params = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
        trajectory.append(params)
    return trajectory


def _probe_terms(model: nn.Module, params: Params, probe: tuple[torch.Tensor, torch.Tensor], classes: int | None):
    """[L_t] or [L_t(y=0), ..., L_t(y=classes-1)] at params, probe inputs constant."""
    px, py = probe
    losses = F.cross_entropy(functional_call(model, params, (px.detach(),)), py, reduction="none")
    if classes is None:
        return [losses.mean()]
    return [losses[py == i].sum() / len(py) for i in range(classes)]


def unrolled_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: Sequence[torch.Tensor],
    lr: float,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """dL_T / dx (same shape as x) after all len(batches) SGD steps; probe defaults to (x, y)."""
    x_leaf = x.detach().clone().requires_grad_(True)
    theta = unroll(model, x_leaf, y, batches, lr)[-1]
    (loss,) = _probe_terms(model, theta, probe or (x, y), None)
    (grad,) = torch.autograd.grad(loss, x_leaf, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def unrolled_sensitivity(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: Sequence[torch.Tensor],
    lr: float,
    *,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
    steps: Sequence[int] | None = None,
    classes: int | None = None,
    norm: float = 1,
) -> torch.Tensor:
    """g^t_x = ||dL_t / dx|| for every training example x and every measured step t.

    ``steps`` lists the t (1..len(batches)) to measure, default all. Returns
    (len(steps), N); with ``classes`` set, the class terms L_t(y=i) are measured
    separately: (len(steps), classes, N). Average over the first axis for g_bar_x.
    Cost: one backward pass through t unrolled steps per measured t (and class).
    """
    steps = list(range(1, len(batches) + 1)) if steps is None else list(steps)
    x_leaf = x.detach().clone().requires_grad_(True)
    trajectory = unroll(model, x_leaf, y, batches[: max(steps, default=0)], lr)
    rows = []
    for t in steps:
        per_term = []
        for loss in _probe_terms(model, trajectory[t], probe or (x, y), classes):
            (grad,) = torch.autograd.grad(loss, x_leaf, retain_graph=True, allow_unused=True)
            grad = torch.zeros_like(x) if grad is None else grad
            per_term.append(torch.linalg.vector_norm(grad.flatten(1), ord=norm, dim=1).detach())
        rows.append(torch.stack(per_term) if classes is not None else per_term[0])
    return torch.stack(rows)


def unrolled_sensitivity_block(
    params: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batches: Sequence[torch.Tensor],
    lr: float,
    *,
    steps: Sequence[int],
    classes: int | None = None,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
    norm: float = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`unrolled_sensitivity` of K stacked MLPs at once.

    ``params``: stacked initial weights of K runs (:func:`.seeds.init_block`);
    ``batches[t]``: (K, B) indices, run k's SGD batch at step t+1; x (N, ...)
    and y (N,) the training set all runs share (the probe set too, by default).
    Returns (g (K, len(steps), N), per class (K, len(steps), classes, N) or None).

    Each step's batch inputs are their own leaf, so a backward pass stops at
    the batches it needs; dL_t/dx of an example is the sum over the steps that
    drew it. With ``classes``, the class terms L_t(y=i) go through one batched
    backward pass (``is_grads_batched``), and g is the norm of the sum of their
    gradients (L_t is their sum).
    """
    steps = list(steps)
    k = params[0].shape[0]
    flat = x.detach().flatten(1)
    runs = torch.arange(k, device=x.device)[:, None]
    theta = [p.detach().clone().requires_grad_(True) for p in params]
    trajectory, leaves = [theta], []
    for index in batches[: max(steps, default=0)]:
        leaves.append(flat[index].requires_grad_(True))  # (K, B, D): run k's batch, as a leaf of its own
        loss = F.cross_entropy(block_forward(theta, leaves[-1]).flatten(0, 1), y[index].flatten(), reduction="sum") / index.shape[1]
        grads = torch.autograd.grad(loss, theta, create_graph=True)  # the sum of the runs' means: each run its own gradient
        theta = [p - lr * g for p, g in zip(theta, grads)]
        trajectory.append(theta)
    px, py = (x, y) if probe is None else probe
    px = px.detach().flatten(1)
    terms_of = classes or 1
    totals, by_class = [], []
    for t in steps:
        losses = F.cross_entropy(block_forward(trajectory[t], px).transpose(1, 2), py.expand(k, -1), reduction="none")  # (K, N)
        if classes is None:
            grads = torch.autograd.grad(losses.mean(dim=1).sum(), leaves[:t], retain_graph=True)
            grads = [g[None] for g in grads]
        else:
            terms = torch.stack([losses[:, py == i].sum() / len(py) for i in range(classes)])
            eye = torch.eye(classes, dtype=terms.dtype, device=terms.device)
            grads = torch.autograd.grad(terms, leaves[:t], grad_outputs=eye, is_grads_batched=True, retain_graph=True)
        rows = torch.cat([(runs * len(flat) + index).flatten() for index in batches[:t]])  # row k * N + n of (K * N, D)
        full = torch.zeros(terms_of, k * len(flat), flat.shape[1], dtype=flat.dtype, device=flat.device)
        full.index_add_(1, rows, torch.cat([g.detach().flatten(1, 2) for g in grads], dim=1))
        full = full.view(terms_of, k, len(flat), flat.shape[1])
        totals.append(torch.linalg.vector_norm(full.sum(dim=0), ord=norm, dim=2))
        if classes is not None:
            by_class.append(torch.linalg.vector_norm(full, ord=norm, dim=3).transpose(0, 1))
    total = torch.stack(totals, dim=1)
    return total, (torch.stack(by_class, dim=1) if classes is not None else None)


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of a nonnegative vector: sum_ij |v_i - v_j| / (2 n sum_i v_i).

    0 when all values are equal (and for an all-zero vector); (n-1)/n, the
    maximum for n values, when one value holds everything.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(v) == 0 or bool((v < 0).any()):
        raise ValueError("gini needs a non-empty vector of nonnegative values")
    total = v.sum()
    if total == 0:
        return 0.0
    v, n = v.sort().values, len(v)
    rank = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * rank - n - 1) * v).sum() / (n * total))


def per_class_matrix(g: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Fig 3.4: (classes, classes) matrix from class sensitivities g (classes, N) or (steps, classes, N).

    Row i = class of the loss term L_t(y=i), column j = class of the training
    example x; cell (i, j) = mean of g[..., i, x] over training examples x of
    class j (and over steps when g has a steps axis). Classes without examples give 0.
    """
    g = g.mean(dim=0) if g.dim() == 3 else g
    onehot = F.one_hot(labels, classes).to(g.dtype)  # (N, classes)
    return (g @ onehot) / onehot.sum(dim=0).clamp(min=1)
