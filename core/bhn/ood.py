"""Uncertainty scores from MC predictive samples and the detection metrics of Hendrycks & Gimpel (docs bayes.md §a.2 B4).

Every score takes MC probabilities ``probs`` (S, N, C) (S posterior samples, N inputs, C classes) and returns a
**confidence** (N,): higher = more in-distribution / more likely correct. They port ``dk_anomaly_detection.py``'s
score functions ("NEGATIVEs of the acquisition functions", reference ``acquisition_functions.py``):

- ``max_prob``: max_c of the mean predictive (H&G's baseline; the reference calls it ``var_ratio``).
- ``entropy``: −H[mean_s p_s] (predictive entropy, natural log as ``scipy.stats.entropy``). The reference's
  ``max_ent`` score forgot the minus (it returns +H, so its entropy AUROCs read 100 − ours); we negate, as its
  own comment says every score should be.
- ``bald``: −(H[mean_s p_s] − mean_s H[p_s]) (mutual information, natural log as ``scipy.stats.entropy`` in the
  anomaly code; the active-learning loop ``dk_AL.py`` uses log2, see :mod:`core.bhn.active`; the base only rescales,
  so no AUROC/AUPR changes with it).
- ``mean_std``: −mean_c sqrt(max(E_s[p²] − E_s[p]², 0)) (population std over samples).
- ``var_ratio``: −(1 − f_mode), f_mode the fraction of samples whose argmax is the modal class (Gal's variation
  ratio, ``dk_AL.py``'s ``var_ratio``; ties go to the lowest class, as ``scipy.stats.mode``).

Entropies are not renormalised (``scipy.stats.entropy`` renormalises; the anomaly code feeds it unclipped softmax,
which sums to one already); 0·log 0 = 0.

Metrics (``dk_anomaly_detection.get_results``; H&G ``Vision/MNIST_Softmax_Stats.ipynb``), ×100:
AUROC with the in-distribution set positive on the confidence; AUPR-in = average precision, in-distribution
positive, on the confidence; AUPR-out = average precision, OOD positive, on the negated confidence. Error detection is
the same with correctly classified inputs as "in" and misclassified ones as "out". AUROC and average precision are
computed here (tie-aware, equal to scikit-learn's ``roc_auc_score`` / ``average_precision_score``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

SCORES = ("max_prob", "entropy", "bald", "mean_std", "var_ratio")


def _check(probs: torch.Tensor) -> torch.Tensor:
    probs = torch.as_tensor(probs)
    if probs.ndim != 3:
        raise ValueError(f"MC probabilities must be (samples, inputs, classes), got shape {tuple(probs.shape)}")
    return probs


def entropy(p: torch.Tensor, base: float = math.e) -> torch.Tensor:
    """−Σ_c p log p over the last axis, 0·log 0 = 0, in the given log base."""
    return -torch.special.xlogy(p, p).sum(-1) / math.log(base)


def predictive_entropy(probs: torch.Tensor, base: float = math.e) -> torch.Tensor:
    """H[mean_s p_s] (N,)."""
    return entropy(_check(probs).mean(0), base)


def mutual_information(probs: torch.Tensor, base: float = math.e) -> torch.Tensor:
    """BALD: H[mean_s p_s] − mean_s H[p_s] (N,), ≥ 0 up to rounding."""
    probs = _check(probs)
    return entropy(probs.mean(0), base) - entropy(probs, base).mean(0)


def mean_std(probs: torch.Tensor) -> torch.Tensor:
    """mean_c of the per-class std over samples (N,) (population std, as the reference)."""
    probs = _check(probs)
    var = (probs.pow(2).mean(0) - probs.mean(0).pow(2)).clamp_min(0)
    return var.sqrt().mean(-1)


def variation_ratio(probs: torch.Tensor) -> torch.Tensor:
    """1 − (count of the modal sample argmax) / S (N,)."""
    probs = _check(probs)
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)  # (N, C)
    return 1 - votes.max(-1).values.to(probs.dtype) / probs.shape[0]


def confidence(probs: torch.Tensor, score: str) -> torch.Tensor:
    """The named score as a confidence (N,): higher = more in-distribution (see the module docstring)."""
    probs = _check(probs)
    if score == "max_prob":
        return probs.mean(0).max(-1).values
    if score == "entropy":
        return -predictive_entropy(probs)
    if score == "bald":
        return -mutual_information(probs)
    if score == "mean_std":
        return -mean_std(probs)
    if score == "var_ratio":
        return -variation_ratio(probs)
    raise ValueError(f"unknown score {score!r} (choose from {', '.join(SCORES)})")


# ============================================================================ ranking metrics


def _binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.shape} labels for {scores.shape} scores")
    if labels.all() or not labels.any():
        raise ValueError("AUROC/AUPR need both positives and negatives")
    return labels, scores


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for positive ``labels`` (ties count one half; = sklearn roc_auc_score)."""
    labels, scores = _binary(labels, scores)
    from scipy.stats import rankdata

    ranks = rankdata(scores)  # average ranks: a tie between a positive and a negative counts 1/2
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(labels, scores) -> float:
    """Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, highest first (= sklearn average_precision_score)."""
    labels, scores = _binary(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    predicted = last + 1
    precision = tp / predicted
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def detection(in_conf, out_conf) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out ×100 of in-distribution confidences against OOD ones (``get_results``' conventions)."""
    ins = np.asarray(torch.as_tensor(in_conf).detach().cpu(), dtype=np.float64).ravel()
    oos = np.asarray(torch.as_tensor(out_conf).detach().cpu(), dtype=np.float64).ravel()
    scores = np.r_[ins, oos]
    is_in = np.r_[np.ones(len(ins), bool), np.zeros(len(oos), bool)]
    return {"auroc": 100 * auroc(is_in, scores),
            "aupr_in": 100 * average_precision(is_in, scores),
            "aupr_out": 100 * average_precision(~is_in, -scores)}


def error_detection(probs: torch.Tensor, labels, score: str) -> dict[str, float]:
    """Right-vs-wrong detection: the MC-mean prediction's correct inputs are "in", the misclassified ones "out"
    (ValueError when every input, or none, is classified correctly)."""
    probs = _check(probs)
    conf = confidence(probs, score).cpu()
    correct = probs.mean(0).argmax(-1).cpu() == torch.as_tensor(labels).cpu()
    return detection(conf[correct], conf[~correct])


def ood_metrics(in_probs: torch.Tensor, out_probs: torch.Tensor, scores=SCORES) -> dict[str, dict[str, float]]:
    """{score: detection(...)} of the in-distribution MC probabilities against an OOD set's."""
    return {s: detection(confidence(in_probs, s), confidence(out_probs, s)) for s in scores}
