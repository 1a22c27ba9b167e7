"""Training loops: :func:`fit` for the classifiers (utils.train_model of CW-Huang/BayesianHypernet) and
:func:`fit_hypernet` for a hypernet on a user log-density (toys).

fit, per epoch e = 0..epochs-1: KL weight w = objective.kl_weight(e, epochs, anneal); a fresh permutation of the
training set (the reference's default ``toshuffle=False`` never reshuffles: the one documented difference) cut
into N // batch full minibatches (the reference's ``range(N/bs)`` drops the tail; ``tail`` keeps it, as dk_AL.py's
active-learning loop does; one minibatch of all N when N < batch); per minibatch one eps (objective.elbo_loss),
backward, total-norm clip 10 then value clip 5, Adam (torch.optim.Adam, lasagne's defaults 0.9 / 0.999 / 1e-8).
After each epoch the validation accuracy of the ``valid_samples``-sample MC predictive (utils.evaluate_model, argmax
of the mean); weights saved when it improves strictly (``va_acc > rec``) and restored at the end. The reference's
``e <= e0`` skips epoch 0 (e0 = 0): we train every epoch, so its annealing starts at w(1) where ours starts at
w(0) = 0.001. core/bhn/reference.py is the reference-style loop that tests/test_bhn_train.py compares to this one
step for step.

All randomness (permutations, eps, dropout masks) comes from one torch.Generator seeded by ``seed``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

from core.bhn import hypernet as hn
from core.bhn import models as bm
from core.bhn import objective as obj


@dataclass
class FitResult:
    best_epoch: int  # 0-based epoch whose weights were restored (-1: no validation, or accuracy never > 0: last weights)
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, nll, kl, kl_weight, valid_acc, valid_nll, steps


def epoch_batches(n: int, batch: int, generator: torch.Generator, tail: bool = False) -> list[torch.Tensor]:
    """One epoch's minibatches: a fresh permutation, N // batch full batches (the whole set when N < batch); with
    ``tail`` the partial last batch too (dk_AL.py's train_model: ``range(N/bs + int(N%bs > 0))``)."""
    perm = torch.randperm(n, generator=generator)
    if n <= batch or tail:
        return list(perm.split(batch))
    return list(perm[: (n // batch) * batch].split(batch))


@torch.no_grad()
def evaluate(model: bm.BHNModel, x: torch.Tensor, y: torch.Tensor, samples: int, generator: torch.Generator | None = None,
             max_n: int = 1000) -> tuple[float, float]:
    """(accuracy, NLL) of the MC predictive mean over ``samples`` draws (utils.evaluate_model, in chunks of max_n)."""
    correct, nll = 0.0, 0.0
    for start in range(0, len(x), max_n):
        probs = bm.sample_probs(model, x[start:start + max_n], samples, generator).mean(0)
        yb = y[start:start + max_n]
        correct += (probs.argmax(-1) == yb).sum().item()
        nll -= torch.log(probs.gather(1, yb[:, None]).clamp_min(1e-12)).sum().item()
    return correct / len(x), nll / len(x)


def make_optimizer(model: bm.BHNModel, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)


def train_step(model: bm.BHNModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n_train: int,
               weight: float, generator: torch.Generator) -> dict[str, float]:
    """One minibatch: loss, backward, clip (per member group), Adam step; returns the loss terms."""
    optimizer.zero_grad(set_to_none=True)
    loss, terms = obj.elbo_loss(model, x, y, n_train, weight, generator=generator)
    loss.backward()
    for group in model.member_groups():
        obj.clip_gradients(group)
    optimizer.step()
    return terms


def fit(model: bm.BHNModel, spec: bm.BHNSpec, x: torch.Tensor, y: torch.Tensor, x_valid: torch.Tensor | None,
        y_valid: torch.Tensor | None, epochs: int, lr: float, batch: int, seed: int, valid_samples: int = 20,
        anneal: bool = False, progress: Callable[[int, dict], None] | None = None,
        optimizer: torch.optim.Optimizer | None = None, tail: bool = False) -> FitResult:
    """Train in place; restore the best-validation weights (none given: the last). ``progress(epoch, entry)``
    after each epoch. ``optimizer``: continue with this Adam and its moments (a warm start, as the reference's
    compiled ``train_func`` keeps its Adam state across active-learning acquisitions); None: a fresh one at ``lr``.
    ``tail``: keep each epoch's partial last minibatch (:func:`epoch_batches`)."""
    if spec != model.spec:
        raise ValueError("spec differs from the model's spec")
    gen = torch.Generator().manual_seed(int(seed))
    optimizer = make_optimizer(model, lr) if optimizer is None else optimizer
    n = len(x)
    history: list[dict] = []
    best_acc, best_epoch, best_state = 0.0, -1, None  # utils.train_model: rec = 0, save when va_acc > rec
    for epoch in range(epochs):
        weight = obj.kl_weight(epoch, epochs, anneal)
        model.train()
        sums: dict[str, float] = {}
        batches = epoch_batches(n, batch, gen, tail)
        for idx in batches:
            terms = train_step(model, optimizer, x[idx], y[idx], n, weight, gen)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        entry = {"epoch": epoch, "steps": len(batches), **{k: v / len(batches) for k, v in sums.items()}}
        entry["kl_weight"] = weight
        model.eval()
        if x_valid is not None and len(x_valid):
            acc, nll = evaluate(model, x_valid, y_valid, valid_samples, gen)
            entry.update(valid_acc=acc, valid_nll=nll)
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = copy.deepcopy(model.state_dict())
        history.append(entry)
        if progress is not None:
            progress(epoch, entry)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch, history)


def likelihood_weight(step: int, ramp: float, start: float = 1e-3) -> float:
    """The annealed variational objective's likelihood weight (Huang, Tan, Lacoste & Courville 2018, "Improving
    explorability in variational inference with annealed variational objectives", AVO): min(1, start + step / ramp),
    rising linearly from ``start`` at step 0 to 1 at step (1 - start)·ramp; 1 throughout when ramp <= 0 (off)."""
    if ramp <= 0:
        return 1.0
    return min(1.0, start + step / ramp)


def fit_hypernet(hnet: hn.Hypernet, log_density: Callable[[torch.Tensor], torch.Tensor], steps: int, lr: float,
                 samples: int, seed: int, anneal: Callable[[int], float] | None = None,
                 record_every: int = 0, final_lr: float | None = None,
                 log_likelihood: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 likelihood_weight: Callable[[int], float] | None = None) -> list[dict]:
    """Fit q(theta) to an unnormalised log-density by reverse KL: loss = mean_s [log q(theta_s) - w(t) log p~(theta_s)]
    over ``samples`` draws per step (w = 1 without ``anneal``), Adam, total-norm clip 10 then value clip 5.
    ``log_density`` maps theta (n, D) to (n,) (a toy's log prior + log likelihood). Returns every
    ``record_every``-th step's {step, loss, log_q, log_p} (+ likelihood_weight when tempered; none when 0). ``final_lr``: decay the learning rate
    geometrically from lr to final_lr over the steps (a constant lr leaves Adam's noise in the fitted moments).
    Tempering (AVO; :func:`likelihood_weight`): with ``log_likelihood`` given, ``log_density`` is the log prior and
    log p~ = log_density + v(t) log_likelihood, v = ``likelihood_weight`` (1 when None); ``anneal`` still multiplies
    the whole. Without ``log_likelihood`` the loop is the untempered one, unchanged."""
    gen = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(hnet.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    decay = 1.0 if final_lr is None else (final_lr / lr) ** (1.0 / max(steps - 1, 1))
    params = list(hnet.parameters())
    out = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        theta, log_q = hn.hypernet_sample(hnet, samples, gen)
        log_p = log_density(theta)
        if log_likelihood is not None:  # tempered target: prior + v(t) likelihood
            v = 1.0 if likelihood_weight is None else likelihood_weight(step)
            log_p = log_p + v * log_likelihood(theta)
        w = 1.0 if anneal is None else anneal(step)
        loss = (log_q - w * log_p).mean()
        loss.backward()
        obj.clip_gradients(params)
        optimizer.step()
        if decay != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= decay
        if record_every and step % record_every == 0:
            out.append({"step": step, "loss": loss.item(), "log_q": log_q.mean().item(), "log_p": log_p.mean().item()})
            if log_likelihood is not None:
                out[-1]["likelihood_weight"] = v
    return out
