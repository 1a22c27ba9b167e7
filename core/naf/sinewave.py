"""N3, the sine-wave posterior (NAF ``sf_sinewave.py``; docs bayes.md §a.1 N3, §d.2).

Infer the frequency f of y(t) = sin(2π f t) from y at t ∈ {0, 5/6, 10/6} made with f = 0.6. Log-likelihood
L(f) = −Σ_t (sin(2π f t) − y_t)² / 0.25; f = 2σ(h) (a flat prior on (0, 2)), so the posterior on (0, 2) is
p(f) = exp L(f) / Z, Z by 1-D quadrature. Its modes are f = 0.6, 1.2, 1.8 (every wave through the three
points; f → 0 is a fourth, at the boundary). q is a 1-D flow on N(0, 1) noise ε then f = 2σ(h): monotone in ε,
so KL(q‖p) and q's mass near each mode are integrals over ε, computed by quadrature on a fine ε grid.
"""
from __future__ import annotations

import math

import torch

from core.naf import hparams

P = hparams.SINEWAVE
MODES = hparams.SINEWAVE_MODES
HALF_WIDTH = 0.1  # "within ±0.1 of f"


def observations(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, y): the three time points and y = sin(2π·0.6·t)."""
    t = torch.tensor(P["t"], dtype=dtype)
    return t, torch.sin(2 * math.pi * P["f_true"] * t)


def log_likelihood(f: torch.Tensor) -> torch.Tensor:
    """L(f) = −Σ_t (sin(2π f t) − y_t)² / 0.25, elementwise over f (any shape)."""
    t, y = observations(f.dtype)
    t, y = t.to(f.device), y.to(f.device)
    return -((torch.sin(2 * math.pi * f.unsqueeze(-1) * t) - y) ** 2).sum(-1) / P["noise_var"]


def squash(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f = 2σ(h) and log|df/dh| = log 2 + log σ(h) + log σ(−h)."""
    return P["f_max"] * torch.sigmoid(h), math.log(P["f_max"]) + torch.nn.functional.logsigmoid(h) + torch.nn.functional.logsigmoid(-h)


def annealing(step: int, total: int) -> float:
    """sf_sinewave.py's energy weight: min(1, 0.2 + step / (0.8·total))."""
    return min(1.0, P["anneal_start"] + step / (P["anneal_fraction"] * total))


def f_grid(n: int = 200_001) -> torch.Tensor:
    """n equally spaced points on [0, 2] (float64)."""
    return torch.linspace(0.0, P["f_max"], n, dtype=torch.float64)


def log_z(n: int = 200_001) -> float:
    """log ∫_0^2 exp L(f) df by the trapezoid rule on n points."""
    f = f_grid(n)
    return float(torch.log(torch.trapezoid(torch.exp(log_likelihood(f)), f)))


def true_mode_masses(n: int = 200_001) -> dict[float, float]:
    """Posterior mass within ±0.1 of each mode (trapezoid on n points)."""
    f = f_grid(n)
    dens = torch.exp(log_likelihood(f) - log_z(n))
    return {c: float(torch.trapezoid(dens * ((f - c).abs() < HALF_WIDTH), f)) for c in MODES}


def true_mass_near_zero(n: int = 200_001) -> float:
    """Posterior mass at f < 0.1 (the boundary mode f -> 0)."""
    f = f_grid(n)
    return float(torch.trapezoid(torch.exp(log_likelihood(f) - log_z(n)) * (f < HALF_WIDTH), f))


def eps_grid(n: int = 20_001, box: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε grid on [−box, box], trapezoid weights × N(ε; 0, 1)) for integrals over q's noise."""
    eps = torch.linspace(-box, box, n, dtype=torch.float64)
    w = torch.full_like(eps, float(eps[1] - eps[0]))
    w[0] = w[-1] = w[0] / 2
    return eps, w * torch.exp(-0.5 * eps ** 2) / math.sqrt(2 * math.pi)


def q_metrics(f: torch.Tensor, log_q: torch.Tensor, weights: torch.Tensor, logz: float) -> list[dict]:
    """Per model k: KL(q‖p) = ∫ φ(ε)[log q(f(ε)) − L(f(ε)) + log Z] dε and ``mode_mass_<c>`` = ∫ φ(ε) 1[|f(ε) − c| < 0.1] dε.

    ``f``, ``log_q``: (K, G) on the ε grid whose φ-weights are ``weights`` (G,) (:func:`eps_grid`); log q is q's
    density of f (noise density − log|dh/dε| − log|df/dh|).
    """
    f, log_q, weights = f.double(), log_q.double(), weights.to(f.device).double()
    kl = ((log_q - log_likelihood(f) + logz) * weights).sum(-1)
    out = []
    for k in range(f.shape[0]):
        row = {"kl_nats": float(kl[k])}
        for c in MODES:
            row[f"mode_mass_{c}"] = float((weights * ((f[k] - c).abs() < HALF_WIDTH)).sum())
        out.append(row)
    return out
