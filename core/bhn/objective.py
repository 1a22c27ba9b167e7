"""BHN's training objective, prior, KL annealing and gradient clipping (CW-Huang/BayesianHypernet BHNs.py Base_BHN).

bhn (Base_BHN._get_elbo, one eps per minibatch, ``perdatapoint`` 0):
    loss = -[ mean_batch log p(y | x, g) - w (log q(g) - log p(g)) / N ],
with p(y | x, g) the softmax clipped to [0.001, 0.999], log q(g) = log N(eps) - sum log|det| (hypernet.py: the
reference drops the eps density, which has no gradient), prior log p(g) = log N(g; 0, 1/lambda) summed
(utils.log_normal(g, 0, -log lambda)), N the training-set size, w the KL weight.
map / ensemble / mcdropout: loss = -mean log p(y | x) (same clipping) + l2 * sum of squared parameters
(dk_anomaly_detection.py: lasagne.regularization.l2 * 1e-5; an ensemble sums its members' losses).
Gradients: total-norm constraint 10 (lasagne.updates.total_norm_constraint: scale min(norm, 10) / (norm + 1e-7)),
then elementwise clip to [-5, 5] (Base_BHN.max_norm, clip_grad), per member for ensembles. fit clips every model
kind so (dk_anomaly_detection.py clips its mlp / dropout baselines too; experiment_MLP_WN's MCdropout_MLP does not).
"""
from __future__ import annotations

import math

import torch

from core.bhn import models as bm

MAX_NORM, CLIP_GRAD = 10.0, 5.0  # Base_BHN.max_norm, Base_BHN.clip_grad
NORM_EPS = 1e-7  # lasagne total_norm_constraint's epsilon
LOG_2PI = math.log(2 * math.pi)


def kl_weight(epoch: int, epochs: int, anneal: bool) -> float:
    """w = min(1, 0.001 + epoch / (epochs / 2)) when annealing (utils.train_model), else 1 (epoch 0-based)."""
    if not anneal:
        return 1.0
    return min(1.0, 0.001 + epoch / (epochs / 2.0))


def log_prior(g: torch.Tensor, prior_lambda: float) -> torch.Tensor:
    """log N(g; 0, 1/lambda) summed over the last dim (utils.log_normal with log_var = -log lambda)."""
    return (-0.5 * LOG_2PI + 0.5 * math.log(prior_lambda) - 0.5 * prior_lambda * g * g).sum(-1)


def clipped_log_lik(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log of the clipped softmax probability of each label: logits (S, N, C), y (N,) -> (S, N)."""
    probs = torch.softmax(logits, -1).clamp(bm.CLIP_LO, bm.CLIP_HI)
    return torch.log(probs.gather(-1, y.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(-1))


def elbo_loss(model: bm.BHNModel, x: torch.Tensor, y: torch.Tensor, n_train: int, kl_weight: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The minibatch loss (a scalar to minimise) and its terms: nll = -mean log p(y|x), and for bhn log_q, log_p,
    kl = log q - log p (one eps), kl_weight; for point models l2 (the penalty)."""
    spec = model.spec
    if spec.model == "bhn":
        g, log_q = bm.sample_scales(model, 1, generator)
        log_lik = clipped_log_lik(bm.logits(model, x, 1, g=g), y).mean()
        log_p = log_prior(g, spec.prior_lambda)
        kl = (log_q - log_p).mean()
        loss = -(log_lik - kl_weight * kl / n_train)
        return loss, {"loss": loss.item(), "nll": -log_lik.item(), "log_q": log_q.mean().item(),
                      "log_p": log_p.mean().item(), "kl": kl.item(), "kl_weight": float(kl_weight)}
    if spec.model == "ensemble":
        per_member = [clipped_log_lik(net(x, g_m[None]), y).mean() for net, g_m in zip(model.nets, model.scales)]
        log_lik = torch.stack(per_member)
        nll = -log_lik.sum()
    else:
        log_lik = clipped_log_lik(bm.logits(model, x, 1, generator), y).mean()
        nll = -log_lik
    penalty = sum((p * p).sum() for p in model.parameters()) * spec.l2 if spec.l2 else torch.zeros(())
    loss = nll + penalty
    return loss, {"loss": loss.item(), "nll": -log_lik.mean().item(), "l2": float(penalty.detach())}


@torch.no_grad()
def clip_gradients(params: list[torch.Tensor], max_norm: float = MAX_NORM, clip: float = CLIP_GRAD) -> float:
    """Total-norm constraint then elementwise clip, in place; returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    scale = torch.clamp(norm, max=max_norm) / (NORM_EPS + norm)
    for g in grads:
        g.mul_(scale).clamp_(-clip, clip)
    return float(norm)
