"""A BHN trained the way CW-Huang/BayesianHypernet trains it: the yardstick for :func:`core.bhn.train.fit`.

Written like ``utils.train_model`` driving ``BHNs.MLPWeightNorm_BHN`` (``experiment_MLP_WN.py``), one statement per
line of the reference where it can be: per epoch the KL weight ``w = min(1, 0.001 + e/(epochs/2))`` (anneal) or
``kl_weight``; minibatches ``X[i*bs:(i+1)*bs]`` for i < N // bs of the epoch's permutation (ours: reshuffled every
epoch, as fit does); per minibatch one ``ep`` (1, P), ``weights, logdets`` from the hypernet, ``logqw = -logdets``
(+ the eps density, a constant we keep as hypernet.py does), ``logpw = log_normal(weights, 0, -log(lbda)).sum(1)``,
``kl = (logqw - logpw).mean()``, the primary net written out layer by layer with ``W = g * V / ||V||`` per output
unit and the softmax clipped to [0.001, 0.999], ``logpyx = -cc(y, t).mean()``, ``loss = -(logpyx - w kl / N)``;
grads, lasagne ``total_norm_constraint(max_norm=10)`` (scale ``min(norm, 10) / (1e-7 + norm)``), then
``T.clip(g, -5, 5)``, Adam. After each epoch ``evaluate_model(n_mc=v_mc)``: for every MC sample a forward pass
per batch of max_n rows, argmax of the mean; save when ``va_acc > rec`` (rec = 0). Differences from the reference,
shared with fit: every epoch trains (the reference's ``e <= e0`` skips epoch 0), the permutation, and the RNG
(one torch.Generator: the permutation, then each minibatch's eps, then each validation batch's (v_mc, P) eps block).
MLP BHN only (the objective under test); the flows are hypernet.py's (their log-dets are tested against autograd).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from core.bhn import models as bm

MAX_NORM, CLIP_GRAD = 10, 5


@dataclass
class ReferenceResult:
    losses: list[float]  # every minibatch's loss, in order
    valid_accs: list[float]  # per epoch
    best_epoch: int  # 0-based, -1 when va_acc never exceeded 0
    model: bm.BHNModel  # the trained copy, best weights restored


def log_normal(x: torch.Tensor, mean: float, log_var: float) -> torch.Tensor:
    """utils.log_normal: c - log_var/2 - (x - mean)^2 / (2 exp(log_var)), c = -0.5 log(2 pi)."""
    return -0.5 * math.log(2 * math.pi) - log_var / 2.0 - (x - mean) ** 2 / (2.0 * math.exp(log_var))


def primary_probs(model: bm.BHNModel, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """p_net for one sample of the scales, weights (1, P): lasagne DenseLayer + WeightNormLayer per layer."""
    net = model.nets[0]
    h = x.reshape(x.shape[0], -1)
    t = 0
    act = torch.relu if net.activation == "relu" else (lambda z: 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3))))
    for j, (v, b) in enumerate(zip(net.directions, net.biases)):
        num_param = v.shape[0]
        g = weights[:, t:t + num_param].reshape(num_param)
        w_mat = g[:, None] * v / torch.sqrt(torch.sum(v * v, dim=1, keepdim=True))  # (out, in)
        h = h @ w_mat.t() + b
        if j < len(net.directions) - 1:
            h = act(h)
        t += num_param
    return torch.softmax(h, -1)


def train_model(model: bm.BHNModel, X: torch.Tensor, Y: torch.Tensor, Xv: torch.Tensor, Yv: torch.Tensor, lr0: float,
                bs: int, epochs: int, anneal: int, seed: int, v_mc: int = 20, kl_weight: float = 1.0,
                max_n: int = 1000) -> ReferenceResult:
    """Train a deep copy of ``model`` (spec.model 'bhn', arch 'mlp'); labels Y as class indices."""
    model = copy.deepcopy(model)
    hnet = model.hypernet
    lbda = model.spec.prior_lambda
    P = hnet.dim
    params = list(model.parameters())
    optim = torch.optim.Adam(params, lr=lr0, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(int(seed))
    N = X.shape[0]
    rec, best_epoch, best_state = 0.0, -1, None
    losses, va_accs = [], []
    for e in range(epochs):
        if anneal:
            w = min(1.0, 0.001 + e / (epochs / 2.))
        else:
            w = kl_weight
        perm = torch.randperm(N, generator=gen)
        n_batches = N // bs if N > bs else 1
        for i in range(n_batches):
            idx = perm[i * bs:(i + 1) * bs]
            x, y = X[idx], Y[idx]
            ep = torch.randn(1, P, generator=gen, dtype=X.dtype) * hnet.noise_std
            weights, logdets = hnet.transform(ep)
            logqw = -logdets + log_normal(ep, 0.0, 2 * math.log(hnet.noise_std)).sum(1)
            logpw = log_normal(weights, 0., -math.log(lbda)).sum(1)
            kl = (logqw - logpw).mean()
            y_prob = torch.clip(primary_probs(model, x, weights), 0.001, 0.999)
            logpyx = torch.log(y_prob[torch.arange(len(y)), y]).mean()  # -cc(y, target).mean()
            loss = -(logpyx - w * kl / N)
            grads = torch.autograd.grad(loss, params)
            norm = torch.sqrt(sum(torch.sum(g ** 2) for g in grads))
            target_norm = torch.clip(norm, 0, MAX_NORM)
            mgrads = [g * (target_norm / (1e-7 + norm)) for g in grads]
            cgrads = [torch.clip(g, -CLIP_GRAD, CLIP_GRAD) for g in mgrads]
            for p, g in zip(params, cgrads):
                p.grad = g
            optim.step()
            losses.append(loss.item())
        with torch.no_grad():  # evaluate_model(model.predict_proba, Xv, Yv, n_mc=v_mc)
            MCt = torch.zeros(v_mc, Xv.shape[0], model.spec.classes, dtype=Xv.dtype)
            for j in range(math.ceil(Xv.shape[0] / max_n)):
                eps = torch.randn(v_mc, P, generator=gen, dtype=Xv.dtype) * hnet.noise_std
                for i in range(v_mc):
                    weights = hnet.transform(eps[i:i + 1])[0]
                    MCt[i, j * max_n:(j + 1) * max_n] = primary_probs(model, Xv[j * max_n:(j + 1) * max_n], weights)
            va_acc = (MCt.mean(0).argmax(-1) == Yv).double().mean().item()
        va_accs.append(va_acc)
        if va_acc > rec:
            best_state = copy.deepcopy(model.state_dict())
            rec, best_epoch = va_acc, e
    if best_state is not None:
        model.load_state_dict(best_state)
    return ReferenceResult(losses, va_accs, best_epoch, model)
