"""Metrics of the NAF study (docs bayes.md §d.1-d.3), plain NumPy / PyTorch: usable on a trained core.flows block
without a trainable (a notebook, a test), and the trainables of tasks/naf.py call these.

- :func:`energy_metrics` (N1): reverse KL(q‖p) = E_q[log q − U] + log Z on fresh samples of q (log Z by quadrature:
  core.flows.energies.log_z) and q's sample histogram on the heat-map grid.
- :func:`density_metrics` (N2): test NLL −E_p log q on fresh samples, forward KL E_p[log p − log q] where p is exact
  (mog4, grid10), q's mass on the heat-map grid.
- :func:`truth_grid`, :func:`mode_coverage`: the target's mass per heat-map cell and the share of its modes that q
  covers (mog4, grid10, U4).
- :func:`sine_sample_metrics` (N3): q's sample histogram over (0, f_max) and its quadrature mass at f < 0.1 (the
  mode masses and KL(q‖p) are core.naf.sinewave.q_metrics).
- :func:`tabular_ll_metrics` (N5): mean test log-likelihood, its ± 2 s.e. over test points, non-finite points, the gap to
  the true log-density where it is known (mixture6).
- Heat maps travel in result rows as base64 float16 (:func:`encode_grid` / :func:`decode_grid`).
"""
from __future__ import annotations

import base64
import math

import numpy as np
import torch

from core.flows import model as flow
from core.flows.spec import FlowSpec
from core.naf import data as ndata
from core.naf import hparams

HEAT_BINS = 64
EVAL_CHUNK = 20_000
SINE_HIST_BINS = 100
TOY_BOX = {"mog4": 8.0, "grid10": 6.5, "swissroll": 5.0}  # heat-map half-widths; the energies: ENERGY_BOX
ENERGY_BOX = 4.0


def toy_box(target: str) -> float:
    return TOY_BOX.get(target, ENERGY_BOX)


def noise(generators: list[torch.Generator], n: int, dim: int, dtype=torch.float32) -> torch.Tensor:
    """(K, n, dim) standard normal noise, row k from generator k (block-invariant)."""
    return torch.stack([torch.randn(n, dim, generator=g) for g in generators]).to(dtype)


def sample_block(spec: FlowSpec, params: list[torch.Tensor], eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IAF use on given noise: z = forward(eps), log q(z) = log N(eps) − log|det| (K, n)."""
    z, logdet = flow.forward(spec, params, eps)
    return z, flow.log_normal(eps) - logdet


def encode_grid(mass: np.ndarray) -> str:
    """A (B, B) grid of masses as base64 float16 (rows of the parquet stay small)."""
    return base64.b64encode(np.asarray(mass, dtype=np.float16).tobytes()).decode()


def decode_grid(text: str, bins: int = HEAT_BINS) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float64).reshape(bins, -1)


def grid_points(box: float, bins: int = HEAT_BINS) -> tuple[np.ndarray, float]:
    """Cell centres (bins², 2) of [−box, box]², x fastest then y (image rows = y), and the cell area."""
    edges = np.linspace(-box, box, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    gx, gy = np.meshgrid(centres, centres)
    return np.stack([gx.reshape(-1), gy.reshape(-1)], 1), float((edges[1] - edges[0]) ** 2)


def sample_histogram(z: np.ndarray, box: float, bins: int = HEAT_BINS) -> np.ndarray:
    """Share of samples z (n, 2) per cell of [−box, box]² (rows = y)."""
    hist, _, _ = np.histogram2d(z[:, 1], z[:, 0], bins=bins, range=[[-box, box], [-box, box]])
    return hist / len(z)


# ============================================================================ N1, N2 (naf-toy)


@torch.no_grad()
def energy_metrics(spec: FlowSpec, params: list[torch.Tensor], u, log_z: float, seeds: list[int], n: int,
                   box: float = ENERGY_BOX) -> list[dict]:
    """Reverse KL = E_q[log q − U] + log Z on n fresh samples of q (its s.e.), and the sample histogram; one dict per
    configuration of the block (noise from each seed: block-invariant)."""
    gens = [torch.Generator().manual_seed(99_991 * s + 3) for s in seeds]
    gaps, zs = [], []
    for start in range(0, n, EVAL_CHUNK):
        z, log_q = sample_block(spec, params, noise(gens, min(EVAL_CHUNK, n - start), 2, params[0].dtype))
        gaps.append((log_q - u(z)).double())
        zs.append(z.double())
    gap, z = torch.cat(gaps, 1), torch.cat(zs, 1).numpy()
    rows = []
    for k in range(len(seeds)):
        g = gap[k][torch.isfinite(gap[k])]
        rows.append({"kl_nats": float(g.mean()) + log_z, "kl_se": float(g.std() / math.sqrt(len(g))), "log_z": log_z,
                     "heat": encode_grid(sample_histogram(z[k], box)), "nonfinite": float(n - len(g))})
    return rows


@torch.no_grad()
def density_metrics(spec: FlowSpec, params: list[torch.Tensor], target: str, n: int) -> list[dict]:
    """Test NLL −E_p log q on n fresh samples; forward KL E_p[log p − log q] for exact targets; q's mass on the grid."""
    x = ndata.toy_sample(target, n, 31_337)
    dtype = params[0].dtype
    log_q = torch.cat([flow.log_prob(spec, params, torch.from_numpy(x[i:i + EVAL_CHUNK]).to(dtype)).double() for i in range(0, n, EVAL_CHUNK)], 1)
    log_p = torch.from_numpy(ndata.toy_log_prob(target, x)) if target in ndata.EXACT_DENSITIES else None
    points, area = grid_points(toy_box(target))
    grid_q = flow.log_prob(spec, params, torch.from_numpy(points).to(dtype)).double().exp().numpy() * area
    rows = []
    for k in range(log_q.shape[0]):
        nll = -log_q[k]
        row = {"test_nll_nats": float(nll.mean()), "test_nll_se": float(nll.std() / math.sqrt(n)),
               "heat": encode_grid(grid_q[k].reshape(HEAT_BINS, HEAT_BINS)), "kl_nats": float("nan"), "kl_se": float("nan")}
        if log_p is not None:
            diff = log_p - log_q[k]
            row.update(kl_nats=float(diff.mean()), kl_se=float(diff.std() / math.sqrt(n)))
        rows.append(row)
    return rows


def truth_grid(target: str) -> np.ndarray:
    """The target's mass per heat-map cell (energies: exp U normalised on the box; swissroll: a 10⁵-sample histogram)."""
    from core.flows import energies

    box = toy_box(target)
    points, area = grid_points(box)
    if target in energies.ENERGIES:
        u = energies.ENERGIES[target](torch.from_numpy(points)).double().numpy()
        mass = np.exp(u - u.max())
        return (mass / mass.sum()).reshape(HEAT_BINS, HEAT_BINS)
    if target in ndata.EXACT_DENSITIES:
        return (np.exp(ndata.toy_log_prob(target, points)) * area).reshape(HEAT_BINS, HEAT_BINS)
    return sample_histogram(ndata.toy_sample(target, 100_000, 5), box)


MODES = {  # mode centres and the radius that assigns heat-map cells to them (mode coverage)
    "mog4": (np.array(hparams.MOG4["means"]), 2.5),
    "grid10": (None, 0.5),
    "U4": (np.array(hparams.MOG4["means"]) / 2, 1.25),  # U4 is the mog4 mixture on 2z
}


def mode_coverage(target: str, heat: np.ndarray, truth: np.ndarray, share: float = 0.5) -> float:
    """Fraction of the target's modes whose q-mass (cells within the radius) is at least ``share`` of the true mass."""
    centres, radius = MODES[target]
    centres = ndata.toy_modes(target) if centres is None else centres
    points, _ = grid_points(toy_box(target))
    covered = 0
    for c in centres:
        near = (((points - c) ** 2).sum(1) <= radius ** 2).reshape(heat.shape)
        covered += heat[near].sum() >= share * truth[near].sum()
    return covered / len(centres)


# ============================================================================ N3 (naf-sinewave)


def sine_sample_metrics(samples: np.ndarray, f: torch.Tensor, weights: torch.Tensor, f_max: float, near_0: float) -> dict:
    """One configuration's histogram of samples of q(f) over (0, f_max) (``hist``, SINE_HIST_BINS shares) and its
    quadrature mass at f < near_0 (``mass_near_0``; f, weights: q's values and weights on the noise grid)."""
    hist, _ = np.histogram(samples, bins=SINE_HIST_BINS, range=(0.0, f_max))
    return {"hist": encode_grid(hist / hist.sum()), "mass_near_0": float((weights * (f.double() < near_0)).sum())}


# ============================================================================ N5 (naf-tabular)


def tabular_ll_metrics(ll: torch.Tensor, true_ll: torch.Tensor | None = None) -> list[dict]:
    """Per configuration, from log q of the test points ll (K, N): ``test_ll_nats``, ``test_ll_2se`` (over test points),
    ``test_nonfinite`` (points whose log q overflowed even in float64: the mean is then nan / -inf),
    ``entropy_gap_nats`` = mean(true − ll) (forward KL on the test points) and ``true_test_ll_nats`` where the true
    log-density true_ll (N,) is known (NaN gap otherwise)."""
    rows = []
    for k in range(ll.shape[0]):
        row = {"test_ll_nats": float(ll[k].mean()), "test_ll_2se": float(2 * ll[k].std() / math.sqrt(ll.shape[1])),
               "test_nonfinite": float((~torch.isfinite(ll[k])).sum()), "entropy_gap_nats": float("nan")}
        if true_ll is not None:
            row["entropy_gap_nats"] = float((true_ll - ll[k]).mean())
            row["true_test_ll_nats"] = float(true_ll.mean())
        rows.append(row)
    return rows
