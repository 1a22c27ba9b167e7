"""The toy linear structural equation models (SEMs) of the IRM paper, as used in thesis §5.4.2.

One SEM has a hidden confounder ``h``, causes ``x`` and effects ``z`` of
``half = dim // 2`` dimensions each, and a scalar target (IRM code names in
brackets; the code calls x, z, h "X1", "X2", "Z" in the paper)::

    h = sigma * N(0, I)
    x = h @ W_hx + sigma * N(0, I)
    y = x @ W_xy + h @ W_hy + s_y * N(0, I)            (half-dimensional)
    z = y @ W_yz + h @ W_hz + s_z * N(0, I)
    target = sum_j y_j,      inputs = [x, z] @ S

- heteroskedastic (``hetero``): s_y = sigma, s_z = 1; homoskedastic: s_y = 1, s_z = sigma.
- ``ones`` [setup_ones, IRM default]: W_xy = W_yz = I; otherwise N(0, 1) / dim entries
  (the REx copy of the script defaults to the Gaussian weights).
- ``hidden`` (partially observed): W_hx, W_hy, W_hz have N(0, 1) / dim entries;
  fully observed: W_hx = I, W_hy = W_hz = 0, so h is only extra noise on x and
  there is no confounding path from h to the target or to z.
- ``scrambled``: S is the Q factor of the QR decomposition of a standard
  Gaussian (dim x dim) matrix (orthogonal); otherwise S = I.

The target is linear in x alone: target = x @ W_xy.sum(1) + noise, so the
causal coefficients on the original coordinates [x, z] are
``[W_xy.sum(1), 0]``; a linear predictor ``inputs @ beta`` has coefficients
``S @ beta`` on [x, z] (IRM code: ``sem_scramble @ method.solution()``).

Domains: sigma in (0.2, 2.0, 5.0), 1000 samples each; the IRM code trains on the
first two and uses the last as the validation domain that picks the penalty
weight (ERM fits all three pooled).

Randomness: every draw comes from a child stream of ``SeedSequence(seed)``
(weights, scrambling, then one stream per domain), and standard normals are
drawn whatever the setting, so settings with the same seed share their noise
(common random numbers) and methods with the same seed see identical data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.sem import hparams

SIGMAS: tuple[float, ...] = (0.2, 2.0, 5.0)
N_TRAIN_DOMAINS = 2  # the first two domains train; the last one validates
DEFAULT_DIM = hparams.DIM
DEFAULT_SAMPLES = hparams.SAMPLES


@dataclass(frozen=True)
class SemSetting:
    """One of the 8 settings: confounder hidden or not, hetero/homoskedastic, scrambled or not."""

    hidden: bool
    hetero: bool
    scrambled: bool

    @property
    def code(self) -> str:
        """The IRM paper's three-letter name: F/P (fully/partially observed), O/E (homo/hetero), U/S."""
        return ("P" if self.hidden else "F") + ("E" if self.hetero else "O") + ("S" if self.scrambled else "U")

    @property
    def description(self) -> str:
        """Long name, e.g. ``hidden, heteroskedastic, scrambled``."""
        return ", ".join(
            [
                "hidden" if self.hidden else "fully observed",
                "heteroskedastic" if self.hetero else "homoskedastic",
                "scrambled" if self.scrambled else "unscrambled",
            ]
        )


# IRM paper order: FOU FOS FEU FES POU POS PEU PES.
SETTINGS: tuple[SemSetting, ...] = tuple(
    SemSetting(hidden=hidden, hetero=hetero, scrambled=scrambled)
    for hidden in (False, True)
    for hetero in (False, True)
    for scrambled in (False, True)
)


def setting_from_code(code: str) -> SemSetting:
    """The setting named by a three-letter code such as ``PES``; ValueError for unknown codes."""
    for setting in SETTINGS:
        if setting.code == code.upper():
            return setting
    raise ValueError(f"unknown SEM setting {code!r} (choose from {', '.join(s.code for s in SETTINGS)})")


@dataclass(frozen=True)
class LinearSEM:
    """The fixed parameters of one SEM (all (half, half) except ``scramble``, (dim, dim))."""

    w_xy: np.ndarray
    w_yz: np.ndarray
    w_hx: np.ndarray
    w_hy: np.ndarray
    w_hz: np.ndarray
    scramble: np.ndarray
    hetero: bool

    @property
    def half(self) -> int:
        """Dimension of each of h, x, y and z."""
        return self.w_xy.shape[0]

    @property
    def dim(self) -> int:
        """Input dimension, 2 * half."""
        return 2 * self.half

    def causal_coefficients(self) -> np.ndarray:
        """True coefficients of the target on the original [x, z] coordinates: [W_xy.sum(1), 0]."""
        return np.concatenate([self.w_xy.sum(axis=1), np.zeros(self.half)])

    def to_original(self, beta: np.ndarray) -> np.ndarray:
        """Coefficients on [x, z] of the predictor ``inputs @ beta`` (inputs = [x, z] @ S): S @ beta."""
        return self.scramble @ np.asarray(beta, dtype=float).reshape(-1)


@dataclass(frozen=True)
class Domain:
    """One domain's samples: ``inputs`` (n, dim), ``target`` (n,), drawn at noise scale ``sigma``."""

    sigma: float
    inputs: np.ndarray
    target: np.ndarray


def orthogonal_matrix(dim: int, rng: np.random.Generator) -> np.ndarray:
    """Q of the QR decomposition of a standard Gaussian matrix (as the IRM code; no sign fix)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q


def make_sem(
    setting: SemSetting, dim: int = DEFAULT_DIM, ones: bool = True, *, weights_rng: np.random.Generator,
    scramble_rng: np.random.Generator,
) -> LinearSEM:
    """Draw one SEM of ``setting``; ``dim`` must be even (half causes, half effects).

    Five (half, half) Gaussian matrices are always drawn from ``weights_rng`` (in the
    order W_xy, W_yz, W_hx, W_hy, W_hz) and used or not per the setting, so a
    seed gives the same weights in every setting.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be even and >= 2, got {dim}")
    half = dim // 2
    draws = [weights_rng.standard_normal((half, half)) / dim for _ in range(5)]
    eye, zero = np.eye(half), np.zeros((half, half))
    w_xy, w_yz = (eye, eye) if ones else (draws[0], draws[1])
    w_hx, w_hy, w_hz = (draws[2], draws[3], draws[4]) if setting.hidden else (eye, zero, zero)
    scramble = orthogonal_matrix(dim, scramble_rng)
    if not setting.scrambled:
        scramble = np.eye(dim)
    return LinearSEM(w_xy=w_xy, w_yz=w_yz, w_hx=w_hx, w_hy=w_hy, w_hz=w_hz, scramble=scramble, hetero=setting.hetero)


def sample_domain(sem: LinearSEM, n: int, sigma: float, rng: np.random.Generator) -> Domain:
    """``n`` samples of ``sem`` at noise scale ``sigma`` (see the module docstring for the equations)."""
    half = sem.half
    eps_h, eps_x, eps_y, eps_z = (rng.standard_normal((n, half)) for _ in range(4))
    s_y, s_z = (sigma, 1.0) if sem.hetero else (1.0, sigma)
    h = sigma * eps_h
    x = h @ sem.w_hx + sigma * eps_x
    y = x @ sem.w_xy + h @ sem.w_hy + s_y * eps_y
    z = y @ sem.w_yz + h @ sem.w_hz + s_z * eps_z
    return Domain(sigma=float(sigma), inputs=np.concatenate([x, z], axis=1) @ sem.scramble, target=y.sum(axis=1))


def build_sem_task(
    setting: SemSetting, seed: int, dim: int = DEFAULT_DIM, n_samples: int = DEFAULT_SAMPLES, ones: bool = True,
    sigmas: tuple[float, ...] = SIGMAS,
) -> tuple[LinearSEM, list[Domain]]:
    """The SEM and its domains (one per sigma, in order) of one repetition, deterministic in ``seed``."""
    weights, scramble, *domain_seeds = np.random.SeedSequence(int(seed)).spawn(2 + len(sigmas))
    sem = make_sem(setting, dim, ones, weights_rng=np.random.default_rng(weights), scramble_rng=np.random.default_rng(scramble))
    domains = [sample_domain(sem, n_samples, sigma, np.random.default_rng(s)) for sigma, s in zip(sigmas, domain_seeds)]
    return sem, domains


def coefficient_errors(true: np.ndarray, estimate: np.ndarray) -> tuple[float, float]:
    """(causal, non-causal) error as the IRM code's ``errors``.

    Causal: mean squared difference over the coordinates whose true coefficient is
    non-zero (the x part); non-causal: over those whose true coefficient is zero
    (the z part, i.e. mean squared estimate there). An empty part scores 0.
    """
    true, estimate = np.asarray(true, dtype=float).reshape(-1), np.asarray(estimate, dtype=float).reshape(-1)
    if true.shape != estimate.shape:
        raise ValueError(f"shape mismatch: true {true.shape} vs estimate {estimate.shape}")
    causal = true != 0
    sq = (true - estimate) ** 2
    return (float(sq[causal].mean()) if causal.any() else 0.0, float(sq[~causal].mean()) if (~causal).any() else 0.0)
