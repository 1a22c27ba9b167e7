"""Toy target log-densities U1..U9 on R^2 (unnormalised; NAF §6.1's energy-fitting targets) and log Z by quadrature.

Ported from torchkit/toy_energy.py (which calls them "energies" though they are log-densities). Two numerical
changes of form, not of value: log(exp(a) + exp(b)) is written ``logaddexp`` / ``logsumexp`` (torchkit's form
underflows to -inf in float32 far from the modes; torchkit's own ``logsumexp`` helper equals torch.logsumexp), and
U4 keeps torchkit's ``log_normal`` with its eps = 1e-5 in the variance denominator (torchkit/utils.py).

- U1: ring of radius 2 with two lobes (Rezende & Mohamed 2015, U1).
- U2: ring of radius 2*sqrt(2) (width 0.5 on sqrt(|z|^2/2)) times a 3-way mixture (lobe at z1 = 2, sin(z1) band,
  diagonal z1 + z2 = -2.5).
- U3: ellipse ring -(2 - sqrt(z1^2 + z2^2/2))^2.
- U4: 4-component MoG on 2z: means (-5, 0), (5, 0), (0, 5), (0, -5), log-variance log 1.5, weights .1/.3/.4/.2, + 2.5.
- U5-U7: R&M's sine potentials (U2-U4 of R&M) with a weak -c z1^2 tail so they normalise.
- U8, U9: mixtures of those with a blob / with 2 U3(1.5 z - 2).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

LOG_2PI = math.log(2 * math.pi)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, log_var: float, eps: float = 1e-5) -> torch.Tensor:
    """torchkit/utils.py log_normal: -(x - mean)^2 / (2 exp(log_var) + eps) - log_var / 2 - log(2 pi) / 2."""
    return -(x - mean) ** 2 / (2.0 * math.exp(log_var) + eps) - log_var / 2.0 - 0.5 * LOG_2PI


def _lse(*terms: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(torch.stack(terms, -1), -1)


def U1(z: torch.Tensor) -> torch.Tensor:
    z1 = z[..., 0]
    e1 = 0.5 * ((z.pow(2).sum(-1).sqrt() - 2.0) / 0.4) ** 2
    e2 = -_lse(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)
    return -(e1 + e2)


def U2(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    e1 = 0.5 * (((0.5 * z.pow(2)).sum(-1).sqrt() - 2.0) / 0.5) ** 2
    e2 = -_lse(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * (torch.sin(z1) / 0.5) ** 2, -0.5 * ((z1 + z2 + 2.5) / 0.6) ** 2)
    return -(e1 + e2)


def U3(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    return -1.0 * (2.0 - (z1 ** 2 + 0.5 * z2 ** 2).sqrt()) ** 2


U4_MEANS = ((-5.0, 0.0), (5.0, 0.0), (0.0, 5.0), (0.0, -5.0))
U4_WEIGHTS = (0.1, 0.3, 0.4, 0.2)
U4_LOG_VAR = math.log(1.5)


def U4(z: torch.Tensor) -> torch.Tensor:
    z = z * 2
    terms = [_log_normal(z, z.new_tensor(m), U4_LOG_VAR).sum(-1) + math.log(w) for m, w in zip(U4_MEANS, U4_WEIGHTS)]
    return _lse(*terms) + 2.5


def U5(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    w1 = torch.sin(z1 * 0.5 * math.pi)
    return -0.5 * ((z2 - w1) / 0.4) ** 2 - 0.1 * z1 ** 2


def U6(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    w1 = torch.sin(z1 * 0.5 * math.pi)
    w2 = 3 * torch.exp(-0.5 * (z1 - 2) ** 2)
    return _lse(-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + w2) / 0.35) ** 2) - 0.05 * z1 ** 2


def U7(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    w1 = torch.cos(z1 * 0.35 * math.pi)
    w2 = 2 * torch.exp(-0.2 * ((z1 - 2) * 2) ** 2)
    return _lse(-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + w2) / 0.35) ** 2) - 0.1 * (z1 - 2) ** 2


def _sine_pair(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    w1 = torch.sin(z1 * 0.5 * math.pi)
    w3 = 2.5 * torch.sigmoid((z1 - 2) / 0.3)
    return _lse(-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + w3) / 0.35) ** 2)


def U8(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    return _lse(_sine_pair(z) - 0.05 * ((z1 - 2) ** 2 + (z2 + 3) ** 2), -2.5 * (z1 - 2) ** 2 - 2.5 * (z2 - 2) ** 2)


def U9(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    return _lse(_sine_pair(z) - 0.05 * (z1 ** 2 + z2 ** 2), 2 * U3(z * 1.5 - 2)) - 1


ENERGIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "U1": U1, "U2": U2, "U3": U3, "U4": U4, "U5": U5, "U6": U6, "U7": U7, "U8": U8, "U9": U9}

# Half-width of the quadrature box: [-8, 8]^2 holds all but < 1e-4 of U1-U4's mass; the weak z^2 tails of U5-U9
# (as wide as N(0, 10)) need a wider box for log Z to 1e-3 (tests/test_flows_energies.py checks both).
BOX = {"U1": 8.0, "U2": 8.0, "U3": 8.0, "U4": 8.0, "U5": 16.0, "U6": 24.0, "U7": 16.0, "U8": 24.0, "U9": 24.0}


def log_z(name: str, grid: int = 1000, box: float | None = None, chunk: int = 100) -> float:
    """log of the integral of exp(U) over [-box, box]^2 by the midpoint rule on grid x grid cells (float64)."""
    u = ENERGIES[name]
    box = BOX[name] if box is None else box
    h = 2 * box / grid
    centres = torch.linspace(-box + h / 2, box - h / 2, grid, dtype=torch.float64)
    parts = []
    for i in range(0, grid, chunk):
        z1, z2 = torch.meshgrid(centres[i:i + chunk], centres, indexing="ij")
        parts.append(torch.logsumexp(u(torch.stack([z1, z2], -1)).reshape(-1), 0))
    return float(torch.logsumexp(torch.stack(parts), 0) + 2 * math.log(h))
