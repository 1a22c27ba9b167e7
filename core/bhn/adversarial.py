"""Fast gradient sign attack on the MC-averaged predictive and adversary detection (docs bayes.md §a.2 B5; ``FGS_eval.py``).

The reference's attack (``fgm_grad2``) differentiates the cross-entropy of the *averaged* predictive,
CE(mean_s p_s(x), y), through each sample's Jacobian, and steps x + ε·sign(∇ₓ). It averages the Jacobians and the
predictive over independent draws; here one draw of S samples serves both, so the direction is exactly
sign(∇ₓ CE(mean_s p_s(x), y)) of the S-sample average (autograd through ``probs_fn``). Attacked inputs are not clipped
to [0, 1] (the reference does not clip).

Per ε (``evaluate``): accuracy of the ``n_mc``-sample (20) mean prediction on the attacked inputs; clean-vs-attacked
detection AUROC (attacked positive on the uncertainty = clean "in" on the confidence, :func:`core.bhn.ood.detection`)
and the attacked inputs' error-detection AUROC, per score. The reference rank-transforms the scores first, which leaves
AUROC unchanged. Its scores are ``acquisition_functions``' bald, max_ent, var_ratio (= 1 − max prob) and mean_std:
here ``bald``, ``entropy``, ``max_prob``, ``mean_std`` of :mod:`core.bhn.ood`.
"""
from __future__ import annotations

from typing import Callable

import torch

from core.bhn import ood

EPSILONS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.008, 0.01, 0.012, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
            0.15, 0.2, 0.3, 0.5)
FGS_SCORES = ("bald", "entropy", "max_prob", "mean_std")

ProbsFn = Callable[[torch.Tensor], torch.Tensor]  # x (N, ...) -> MC probabilities (S, N, C), differentiable in x


def averaged_ce(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over inputs of −log (mean_s p_s)[y] (``categorical_crossentropy`` of the averaged output)."""
    mean = probs.mean(0)
    return -torch.log(mean.gather(-1, y.view(-1, 1)).squeeze(-1)).mean()


def fgs_direction(probs_fn: ProbsFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign(∇ₓ CE(mean_s p_s(x), y)), shape of x."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = averaged_ce(probs_fn(x), torch.as_tensor(y, device=x.device))
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgs(probs_fn: ProbsFn, x: torch.Tensor, y: torch.Tensor, eps: float, chunk: int = 100) -> torch.Tensor:
    """x + ε·sign(∇ₓ CE(mean_s p_s(x), y)), in chunks of ``chunk`` inputs (the reference's ``max_n`` = 100)."""
    parts = [xc + eps * fgs_direction(probs_fn, xc, yc) for xc, yc in zip(x.split(chunk), torch.as_tensor(y).split(chunk))]
    return torch.cat(parts).detach()


def _mc(probs_fn: ProbsFn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([probs_fn(xc) for xc in x.split(chunk)], 1)


def fgs_eval(attack_fn: ProbsFn, eval_fn: ProbsFn, x: torch.Tensor, y: torch.Tensor, eps=EPSILONS,
             scores=FGS_SCORES, chunk: int = 100) -> list[dict[str, float]]:
    """Per ε (ε = 0 first): accuracy, ``auroc_<score>`` (clean vs attacked, ×100) and ``err_auroc_<score>`` (×100).

    ``attack_fn`` gives the MC samples the gradient averages over (the reference's ``avg``), ``eval_fn`` the ones the
    evaluation averages over (``n_mc`` = 20); both (S, N, C). Detection AUROCs are absent at ε = 0, error AUROCs when
    every (or no) attacked input is misclassified.
    """
    y = torch.as_tensor(y)
    clean = _mc(eval_fn, x, chunk)
    clean_conf = {s: ood.confidence(clean, s).cpu() for s in scores}
    rows = []
    for e in (0.0, *eps):
        probs = clean if e == 0 else _mc(eval_fn, fgs(attack_fn, x, y, e, chunk), chunk)
        correct = probs.mean(0).argmax(-1).cpu() == y.cpu()
        row = {"eps": float(e), "acc": float(correct.float().mean())}
        for s in scores:
            conf = ood.confidence(probs, s).cpu()
            if e > 0:
                row[f"auroc_{s}"] = ood.detection(clean_conf[s], conf)["auroc"]
            if 0 < int(correct.sum()) < len(correct):
                row[f"err_auroc_{s}"] = ood.detection(conf[correct], conf[~correct])["auroc"]
        rows.append(row)
    return rows
