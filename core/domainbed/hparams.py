"""DomainBed's hyperparameter registry for the MNIST datasets, drawn exactly as ``hparams_registry.py`` draws them.

Each hyperparameter has a default and a random distribution. DomainBed
(``domainbed/hparams_registry.py`` since commit 78cf932; ``lib/misc.py``
``seed_hash``) draws hyperparameter ``name`` of a run from its own
``numpy.random.RandomState(seed_hash(seed, name))`` with
``seed = seed_hash(hparams_seed, trial_seed)`` (``scripts/train.py``), and
``hparams_seed = 0`` means the defaults. So a value depends only on
(hparams_seed, trial_seed, name): every algorithm and test environment of a
trial gets the same learning rate and batch size for a given hparams_seed.
The run's own seed (data shuffle, noise, initialisation) is
``seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed)``
(``scripts/sweep.py``).

Only what the MNIST datasets use is listed (``SMALL_IMAGES`` in DomainBed:
weight decay 0, no data augmentation, no ResNet). MM-REx is ours (not in
DomainBed): it takes V-REx's ranges under its own names. The published
2020_10_06_7df6f06 sweep predates commit 78cf932 and drew the same ranges from
one sequential RandomState: same distributions, other values for a seed.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np

STEPS = 5001  # MultipleDomainDataset.N_STEPS
CHECKPOINT_FREQ = 100  # MultipleDomainDataset.CHECKPOINT_FREQ
HOLDOUT_FRACTION = 0.2  # train.py --holdout_fraction
N_HPARAMS = 20  # sweep.py --n_hparams (hparams_seed 0..19; 0 = the defaults)
N_TRIALS = 3  # sweep.py --n_trials

# our method name -> DomainBed's algorithm name (it seeds the runs, as sweep.py's `algorithm` argument)
ALGORITHMS = {"erm": "ERM", "irm": "IRM", "groupdro": "GroupDRO", "vrex": "VREx", "mmrex": "MMREx"}

Draw = Callable[[np.random.RandomState], object]

# (name, default, random draw), in hparams_registry.py's order of definition (the order does not change a draw)
_COMMON: tuple[tuple[str, object, Draw], ...] = (
    ("class_balanced", False, lambda r: False),
)
_ALGORITHM: dict[str, tuple[tuple[str, object, Draw], ...]] = {
    "ERM": (),
    "IRM": (("irm_lambda", 1e2, lambda r: 10 ** r.uniform(-1, 5)),
            ("irm_penalty_anneal_iters", 500, lambda r: int(10 ** r.uniform(0, 4)))),
    "GroupDRO": (("groupdro_eta", 1e-2, lambda r: 10 ** r.uniform(-3, -1)),),
    "VREx": (("vrex_lambda", 1e1, lambda r: 10 ** r.uniform(-1, 5)),
             ("vrex_penalty_anneal_iters", 500, lambda r: int(10 ** r.uniform(0, 4)))),
    "MMREx": (("mmrex_lambda", 1e1, lambda r: 10 ** r.uniform(-1, 5)),  # ours: V-REx's ranges
              ("mmrex_penalty_anneal_iters", 500, lambda r: int(10 ** r.uniform(0, 4)))),
}
_SMALL_IMAGES: tuple[tuple[str, object, Draw], ...] = (  # dataset in SMALL_IMAGES
    ("lr", 1e-3, lambda r: 10 ** r.uniform(-4.5, -2.5)),
    ("weight_decay", 0.0, lambda r: 0.0),
    ("batch_size", 64, lambda r: int(2 ** r.uniform(3, 9))),
)


def seed_hash(*args) -> int:
    """DomainBed's ``misc.seed_hash``: an integer seed from the md5 of ``str(args)``, modulo 2^31."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def _entries(algorithm: str) -> tuple[tuple[str, object, Draw], ...]:
    if algorithm not in _ALGORITHM:
        raise ValueError(f"unknown DomainBed algorithm {algorithm!r} (choose from {', '.join(_ALGORITHM)})")
    return _COMMON + _ALGORITHM[algorithm] + _SMALL_IMAGES


def default_hparams(algorithm: str) -> dict:
    """The defaults of ``algorithm`` (DomainBed's name) on an MNIST dataset."""
    return {name: default for name, default, _ in _entries(algorithm)}


def random_hparams(algorithm: str, seed: int) -> dict:
    """``hparams_registry.random_hparams(algorithm, dataset, seed)``: each value from RandomState(seed_hash(seed, name))."""
    draws = {name: draw(np.random.RandomState(seed_hash(seed, name))) for name, _, draw in _entries(algorithm)}
    return {name: value.item() if isinstance(value, np.generic) else value for name, value in draws.items()}  # plain floats


def hparams_for(algorithm: str, hparams_seed: int, trial_seed: int) -> dict:
    """A run's hyperparameters as ``train.py`` picks them: the defaults for hparams_seed 0, else a random draw."""
    if hparams_seed == 0:
        return default_hparams(algorithm)
    return random_hparams(algorithm, seed_hash(hparams_seed, trial_seed))


def run_seed(dataset: str, algorithm: str, test_envs: Sequence[int], hparams_seed: int, trial_seed: int) -> int:
    """``sweep.py``'s ``--seed`` of a run: seed_hash(dataset, algorithm, test_envs (a list), hparams_seed, trial_seed)."""
    return seed_hash(dataset, algorithm, list(test_envs), hparams_seed, trial_seed)


def test_env_combinations(n_envs: int, pairs: bool = True) -> list[tuple[int, ...]]:
    """``sweep.py``'s test environments: each single one and, with ``pairs`` (its default), each pair after it."""
    out = []
    for i in range(n_envs):
        out.append((i,))
        if pairs:
            out += [(i, j) for j in range(i + 1, n_envs)]
    return out
