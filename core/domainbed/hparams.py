"""DomainBed's published values and search spaces live here (the registry rule: each core part's in ``core/<part>/hparams.py``).

The MNIST datasets' hyperparameters, drawn exactly as ``hparams_registry.py``
draws them; the pipeline's presets and its Optuna distributions read this
module (the distributions are built from the same range table the draws use).

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
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

STEPS = 5001  # MultipleDomainDataset.N_STEPS
CHECKPOINT_FREQ = 100  # MultipleDomainDataset.CHECKPOINT_FREQ
HOLDOUT_FRACTION = 0.2  # train.py --holdout_fraction
N_HPARAMS = 20  # sweep.py --n_hparams (hparams_seed 0..19; 0 = the defaults)
N_TRIALS = 3  # sweep.py --n_trials

# our method name -> DomainBed's algorithm name (it seeds the runs, as sweep.py's `algorithm` argument)
ALGORITHMS = {"erm": "ERM", "irm": "IRM", "groupdro": "GroupDRO", "vrex": "VREx", "mmrex": "MMREx"}



@dataclass(frozen=True)
class LogUniform:
    """A random draw of hparams_registry.py: ``base ** U(low, high)``, truncated to an int when ``integer``."""

    low: float
    high: float
    base: int = 10
    integer: bool = False

    def draw(self, r: np.random.RandomState):
        value = self.base ** r.uniform(self.low, self.high)
        return int(value) if self.integer else value

    @property
    def bounds(self) -> tuple[float, float] | tuple[int, int]:
        """The values a draw can take: [base^low, base^high], or the ints int(base^low) .. ceil(base^high) - 1."""
        low, high = float(self.base) ** self.low, float(self.base) ** self.high
        return (int(low), math.ceil(high) - 1) if self.integer else (low, high)


Entry = tuple[str, object, LogUniform | None]  # (name, default, random draw; None: the default in every draw)

# In hparams_registry.py's order of definition (the order does not change a draw).
_COMMON: tuple[Entry, ...] = (
    ("class_balanced", False, None),
)
_ALGORITHM: dict[str, tuple[Entry, ...]] = {
    "ERM": (),
    "IRM": (("irm_lambda", 1e2, LogUniform(-1, 5)),
            ("irm_penalty_anneal_iters", 500, LogUniform(0, 4, integer=True))),
    "GroupDRO": (("groupdro_eta", 1e-2, LogUniform(-3, -1)),),
    "VREx": (("vrex_lambda", 1e1, LogUniform(-1, 5)),
             ("vrex_penalty_anneal_iters", 500, LogUniform(0, 4, integer=True))),
    "MMREx": (("mmrex_lambda", 1e1, LogUniform(-1, 5)),  # ours: V-REx's ranges
              ("mmrex_penalty_anneal_iters", 500, LogUniform(0, 4, integer=True))),
}
_SMALL_IMAGES: tuple[Entry, ...] = (  # dataset in SMALL_IMAGES
    ("lr", 1e-3, LogUniform(-4.5, -2.5)),
    ("weight_decay", 0.0, None),
    ("batch_size", 64, LogUniform(3, 9, base=2, integer=True)),
)


def seed_hash(*args) -> int:
    """DomainBed's ``misc.seed_hash``: an integer seed from the md5 of ``str(args)``, modulo 2^31."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def _entries(algorithm: str) -> tuple[Entry, ...]:
    if algorithm not in _ALGORITHM:
        raise ValueError(f"unknown DomainBed algorithm {algorithm!r} (choose from {', '.join(_ALGORITHM)})")
    return _COMMON + _ALGORITHM[algorithm] + _SMALL_IMAGES


def default_hparams(algorithm: str) -> dict:
    """The defaults of ``algorithm`` (DomainBed's name) on an MNIST dataset."""
    return {name: default for name, default, _ in _entries(algorithm)}


def search_space(algorithm: str) -> dict[str, LogUniform]:
    """The drawn hyperparameters of ``algorithm`` and their ranges (the fixed ones, as class_balanced, left out)."""
    return {name: space for name, _, space in _entries(algorithm) if space is not None}


def random_hparams(algorithm: str, seed: int) -> dict:
    """``hparams_registry.random_hparams(algorithm, dataset, seed)``: each value from RandomState(seed_hash(seed, name))."""
    draws = {name: default if space is None else space.draw(np.random.RandomState(seed_hash(seed, name)))
             for name, default, space in _entries(algorithm)}
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


# DomainBed's published results (domainbed/results/2020_10_06_7df6f06/results.tex): per rule, dataset and algorithm,
# the test-environment cells and the Avg.
PUBLISHED = {
    "iid": {"ColoredMNIST": {"erm": ("71.7 ± 0.1", "72.9 ± 0.2", "10.0 ± 0.1", "51.5"),
                             "irm": ("72.5 ± 0.1", "73.3 ± 0.5", "10.2 ± 0.3", "52.0"),
                             "groupdro": ("73.1 ± 0.3", "73.2 ± 0.2", "10.0 ± 0.2", "52.1"),
                             "vrex": ("72.4 ± 0.3", "72.9 ± 0.4", "10.2 ± 0.0", "51.8")},
            "RotatedMNIST": {"erm": ("95.9 ± 0.1", "98.9 ± 0.0", "98.8 ± 0.0", "98.9 ± 0.0", "98.9 ± 0.0", "96.4 ± 0.0", "98.0"),
                             "irm": ("95.5 ± 0.1", "98.8 ± 0.2", "98.7 ± 0.1", "98.6 ± 0.1", "98.7 ± 0.0", "95.9 ± 0.2", "97.7"),
                             "groupdro": ("95.6 ± 0.1", "98.9 ± 0.1", "98.9 ± 0.1", "99.0 ± 0.0", "98.9 ± 0.0", "96.5 ± 0.2", "98.0"),
                             "vrex": ("95.9 ± 0.2", "99.0 ± 0.1", "98.9 ± 0.1", "98.9 ± 0.1", "98.7 ± 0.1", "96.2 ± 0.2", "97.9")}},
    "loo": {"ColoredMNIST": {"erm": ("50.0 ± 0.2", "50.1 ± 0.2", "10.0 ± 0.0", "36.7"),
                             "irm": ("46.7 ± 2.4", "51.2 ± 0.3", "23.1 ± 10.7", "40.3"),
                             "groupdro": ("50.1 ± 0.5", "50.0 ± 0.5", "10.2 ± 0.1", "36.8"),
                             "vrex": ("50.2 ± 0.4", "50.5 ± 0.5", "10.1 ± 0.0", "36.9")},
            "RotatedMNIST": {"erm": ("95.3 ± 0.2", "98.9 ± 0.1", "98.9 ± 0.1", "98.8 ± 0.1", "98.5 ± 0.1", "96.2 ± 0.2", "97.7"),
                             "irm": ("94.5 ± 0.5", "98.2 ± 0.2", "98.7 ± 0.1", "96.6 ± 1.5", "98.4 ± 0.1", "95.8 ± 0.1", "97.0"),
                             "groupdro": ("95.7 ± 0.3", "98.7 ± 0.1", "98.9 ± 0.1", "98.6 ± 0.2", "98.6 ± 0.2", "95.3 ± 0.9", "97.6"),
                             "vrex": ("95.8 ± 0.2", "98.7 ± 0.0", "98.5 ± 0.1", "98.9 ± 0.1", "74.0 ± 20.1", "95.5 ± 0.5", "93.6")}},
    "oracle": {"ColoredMNIST": {"erm": ("71.8 ± 0.4", "72.9 ± 0.1", "28.7 ± 0.5", "57.8"),
                                "irm": ("72.0 ± 0.1", "72.5 ± 0.3", "58.5 ± 3.3", "67.7"),
                                "groupdro": ("73.5 ± 0.3", "73.0 ± 0.3", "36.8 ± 2.8", "61.1"),
                                "vrex": ("72.8 ± 0.3", "73.0 ± 0.3", "55.2 ± 4.0", "67.0")},
               "RotatedMNIST": {"erm": ("95.3 ± 0.2", "98.7 ± 0.1", "98.9 ± 0.1", "98.7 ± 0.2", "98.9 ± 0.0", "96.2 ± 0.2", "97.8"),
                                "irm": ("94.9 ± 0.6", "98.7 ± 0.2", "98.6 ± 0.1", "98.6 ± 0.2", "98.7 ± 0.1", "95.2 ± 0.3", "97.5"),
                                "groupdro": ("95.9 ± 0.1", "99.0 ± 0.1", "98.9 ± 0.1", "98.8 ± 0.1", "98.6 ± 0.1", "96.3 ± 0.4", "97.9"),
                                "vrex": ("95.5 ± 0.2", "99.0 ± 0.0", "98.7 ± 0.2", "98.8 ± 0.1", "98.8 ± 0.0", "96.4 ± 0.0", "97.9")}},
}
