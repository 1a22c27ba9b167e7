"""A plain PyTorch loop written the way the IRM reference code does it.

Kept as the yardstick for :mod:`core.cmnist.train`: tests check that both produce
the same numbers from the same initial weights, and ``benchmarks/cmnist_step.py``
times one against the other. Like the reference it evaluates every domain,
the test domain included, with the autograd IRM penalty at every step, and
uses ``torch.optim.Adam``.
"""
from __future__ import annotations

import torch
from torch import nn

from core.cmnist import models
from core.cmnist.domains import Domains
from core.objectives import irm_penalty_autograd, mean_accuracy, mean_nll
from core.cmnist.train import ModelConfig


def reference_mlp(in_dim: int, config: ModelConfig) -> nn.Sequential:
    """The reference MLP, initialised from the same weights as :func:`core.cmnist.models.init_model`."""
    w1, b1, w2, b2, w3, b3 = models.init_model(in_dim, config.hidden, config.seed)
    lin1, lin2, lin3 = nn.Linear(in_dim, config.hidden), nn.Linear(config.hidden, config.hidden), nn.Linear(config.hidden, 1)
    with torch.no_grad():
        for lin, w, b in ((lin1, w1, b1), (lin2, w2, b2), (lin3, w3, b3)):
            lin.weight.copy_(w.T)
            lin.bias.copy_(b[0])
    return nn.Sequential(lin1, nn.ReLU(True), lin2, nn.ReLU(True), lin3)


def reference_train(domains: Domains, method: str, config: ModelConfig, steps: int, reduction: str = "mean") -> dict[str, float]:
    """Train like the IRM/REx reference (method erm, irm, vrex, mmrex or ri); return final train/test accuracy.

    ``reduction`` "mean" is the IRM code's ``torch.stack([nll1, nll2]).mean()``,
    "sum" the REx code's ``loss1 + loss2`` (its RI: ``--mse False
    --penalty_weight 1.0``, i.e. R1 + R2 + |R1 - R2|).
    """
    device = domains.train[0].x.device
    envs = [{"x": d.x.flatten(1), "y": d.y} for d in domains.train + domains.test]
    mlp = reference_mlp(envs[0]["x"].shape[1], config).to(device)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=config.lr)
    for step in range(steps):
        for env in envs:
            logits = mlp(env["x"])
            env["nll"] = mean_nll(logits, env["y"])
            env["acc"] = mean_accuracy(logits, env["y"])
            env["penalty"] = irm_penalty_autograd(logits, env["y"])
        train_nll = torch.stack([envs[0]["nll"], envs[1]["nll"]]).mean()
        train_acc = torch.stack([envs[0]["acc"], envs[1]["acc"]]).mean()
        weight_norm = torch.tensor(0.0, device=device)
        for w in mlp.parameters():
            weight_norm += w.norm().pow(2)
        if method == "ri":  # the REx code's risk interpolation: MM-REx at penalty weight 1, no anneal
            both = envs[0]["nll"] + envs[1]["nll"] + (envs[0]["nll"] - envs[1]["nll"]).abs()
            risk = both if reduction == "sum" else both / 2
        else:
            risk = envs[0]["nll"] + envs[1]["nll"] if reduction == "sum" else train_nll.clone()
        loss = risk + config.l2 * weight_norm
        if method not in ("erm", "ri"):
            if method == "irm":
                penalty = torch.stack([envs[0]["penalty"], envs[1]["penalty"]]).mean()
            elif method == "vrex":
                penalty = (envs[0]["nll"] - envs[1]["nll"]) ** 2
            else:
                penalty = (envs[0]["nll"] - envs[1]["nll"]).abs()
            weight = config.penalty_weight if step >= config.anneal_iters else 1.0
            loss += weight * penalty
            if weight > 1.0:
                loss /= weight
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"train_acc": train_acc.item(), "test_acc": envs[2]["acc"].item(), "train_nll": train_nll.item()}
