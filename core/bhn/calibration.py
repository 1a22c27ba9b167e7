"""Calibration of predictive probabilities: expected calibration error (ECE) and the predictive NLL.

ECE as Guo et al. (arXiv 1706.04599, eq. 3; Naeini et al. 2015): the test points are binned by their confidence
(the top predicted probability) into ``bins`` equal-width bins over [0, 1] (the first bin closed on the left, each
bin (lo, hi]); ECE = Σ_b |B_b| / N · |acc(B_b) − conf(B_b)|, empty bins contributing nothing. The BHN references
report no calibration; ``bhn-classify`` uses 15 bins (bayes.md §d.6).
"""
from __future__ import annotations

import torch

ECE_BINS = 15


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of predictive probabilities ``probs`` (N, C) (e.g. the MC average) against ``labels`` (N,), in [0, 1]."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probs = probs.double()
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels.to(predicted.device)).double()
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins bin 0
    index = torch.clamp(torch.ceil(confidence * bins).long() - 1, 0, bins - 1)
    n = len(labels)
    total = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        member = index == b
        count = int(member.sum())
        if count:
            total += count / n * (correct[member].mean() - confidence[member].mean()).abs()
    return float(total)


def nll(probs: torch.Tensor, labels: torch.Tensor, floor: float = 1e-12) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` (N,) under predictive probabilities ``probs`` (N, C)."""
    picked = probs.double().gather(1, labels.long().view(-1, 1)).squeeze(1)
    return float(-torch.log(picked.clamp_min(floor)).mean())
