"""Active-learning bookkeeping and acquisition functions (docs bayes.md §a.2 B3; reference ``dk_AL.py``, ``AL_helpers.py``).

The reference's loop, on indices into one fixed image array:

1. :func:`candidate_pool_split`: shuffle the training images, the first ``n_candidates`` (10,000) are the candidate
   initial set, the rest the pool (``AL_helpers.split_train_pool_data``; the other candidates are never used).
2. :func:`initial_labelled`: the first ``per_class`` (2) images of each class of the shuffled candidates, class 0's
   first, then class 1's, ... (``AL_helpers.get_initial_training_data``).
3. :func:`acquire`, per acquisition: a random ``subset`` (2,000) of the pool positions is scored
   (``random.sample(range(len(pool)), subset)``), the ``n_acquire`` (10) highest values are labelled
   (``argsort()[-Queries:][::-1]``), then the pool is updated by ``semantics``:

   - ``"remove"`` (default): the acquired images leave the pool;
   - ``"reference"``: the reference's quirk: ``pool = concatenate(pool, scored subset)`` (``delete_*`` is computed and
     never used): nothing leaves, the scored subset is appended again, the pool grows by ``subset`` per step and
     acquired images stay acquirable.

Acquisition values (higher = acquire first) from MC probabilities (S, N, C), as ``dk_AL.py``: ``bald`` mutual
information in bits (log2), ``max_ent`` predictive entropy in bits, ``var_ratio`` 1 − modal-vote fraction of the
sample argmaxes, ``mean_std`` the mean over classes of the per-class std (``acquisition_functions.mean_std``; the
``dk_AL.py`` branch sums, same order), ``random`` uniform (``np.random.choice(subset, Queries, replace=False)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.bhn import ood

ACQUISITIONS = ("bald", "max_ent", "var_ratio", "mean_std", "random")
POOL_SEMANTICS = ("remove", "reference")


@dataclass(frozen=True)
class PoolState:
    """Indices into the image array: the labelled set (acquisition order) and the pool (may repeat under "reference")."""

    labelled: np.ndarray
    pool: np.ndarray


def candidate_pool_split(n: int, n_candidates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of range(n): (the first ``n_candidates`` = the candidate initial set, the rest = the pool)."""
    if not 0 < n_candidates < n:
        raise ValueError(f"n_candidates must lie in 1..{n - 1}, got {n_candidates}")
    order = np.random.default_rng(seed).permutation(n)
    return order[:n_candidates], order[n_candidates:]


def initial_labelled(labels: np.ndarray, candidates: np.ndarray, per_class: int = 2, classes: int = 10) -> np.ndarray:
    """The first ``per_class`` candidates of each class in candidate order, class 0's first (indices into ``labels``)."""
    labels = np.asarray(labels)
    picked = []
    for c in range(classes):
        of_c = candidates[labels[candidates] == c][:per_class]
        if len(of_c) < per_class:
            raise ValueError(f"the candidate set has {len(of_c)} images of class {c}, fewer than {per_class}")
        picked.append(of_c)
    return np.concatenate(picked)


def initial_state(labels: np.ndarray, n_candidates: int, seed: int, per_class: int = 2, classes: int = 10) -> PoolState:
    """Steps 1 and 2 above: the initial labelled set and the pool."""
    candidates, pool = candidate_pool_split(len(labels), n_candidates, seed)
    return PoolState(initial_labelled(labels, candidates, per_class, classes), pool)


def acquisition_values(probs: torch.Tensor, name: str) -> torch.Tensor:
    """The named acquisition function on MC probabilities (S, N, C) → (N,), higher = more worth a label."""
    if name == "bald":
        return ood.mutual_information(probs, base=2)
    if name == "max_ent":
        return ood.predictive_entropy(probs, base=2)
    if name == "var_ratio":
        return ood.variation_ratio(probs)
    if name == "mean_std":
        return ood.mean_std(probs)
    raise ValueError(f"no acquisition values for {name!r} (choose from {', '.join(a for a in ACQUISITIONS if a != 'random')})")


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, largest first (``argsort()[-k:][::-1]``, stable so ties keep a fixed order)."""
    return np.argsort(np.asarray(values), kind="stable")[-k:][::-1]


def acquire(state: PoolState, values_fn: Callable[[np.ndarray], object] | None, n_acquire: int, subset: int,
            rng: np.random.Generator, semantics: str = "remove") -> tuple[PoolState, np.ndarray]:
    """One acquisition: score a random ``subset`` of the pool with ``values_fn(indices) -> (subset,)`` (None = random
    acquisition), label the ``n_acquire`` best, update the pool by ``semantics``. Returns (new state, acquired indices)."""
    if semantics not in POOL_SEMANTICS:
        raise ValueError(f"unknown pool semantics {semantics!r} (choose from {', '.join(POOL_SEMANTICS)})")
    if subset > len(state.pool):
        raise ValueError(f"a scored subset of {subset} is larger than the pool ({len(state.pool)})")
    if not 0 < n_acquire <= subset:
        raise ValueError(f"n_acquire must lie in 1..{subset} (the scored subset), got {n_acquire}")
    positions = rng.choice(len(state.pool), subset, replace=False)
    scored = state.pool[positions]
    if values_fn is None:
        best = rng.choice(subset, n_acquire, replace=False)
    else:
        values = values_fn(scored)
        values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        if values.shape != (subset,):
            raise ValueError(f"values_fn returned shape {values.shape}, expected ({subset},)")
        best = top_k(values, n_acquire)
    acquired = scored[best]
    if semantics == "remove":
        pool = np.delete(state.pool, positions[best])
    else:
        pool = np.concatenate([state.pool, scored])
    return PoolState(np.concatenate([state.labelled, acquired]), pool), acquired


def probs_values_fn(probs_fn: Callable[[np.ndarray], torch.Tensor], name: str) -> Callable[[np.ndarray], torch.Tensor] | None:
    """``values_fn`` for :func:`acquire` from ``probs_fn(indices) -> (S, N, C)``; None for ``random``."""
    if name == "random":
        return None
    if name not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {name!r} (choose from {', '.join(ACQUISITIONS)})")
    return lambda idx: acquisition_values(probs_fn(idx), name)
