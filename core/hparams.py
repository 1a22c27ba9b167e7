"""Published hyperparameters and search spaces, one place for all (DomainBed's ``hparams_registry.py`` is the model).

Presets, searches, tests and benchmarks read these; nothing else writes a
published value down. Search spaces are define-by-run functions of a trial
object with Optuna's ``suggest_float`` / ``suggest_int`` (an Optuna trial in
the pipelines; core never imports Optuna) returning the derived config values.
"""
from __future__ import annotations

from typing import Any

# Colored MNIST (IRM code, tuned by its random search; thesis Table 5.1: REx used the exact same
# hyperparameters as IRM, only replacing the penalty, and so does RI).
CMNIST_IRM = dict(hidden=390, l2=0.00110794568, lr=0.0004898536566546834, anneal_iters=190, penalty_weight=91257.18613115903)
CMNIST_ERM = dict(hidden=256, l2=0.001, lr=0.001, anneal_iters=0, penalty_weight=0.0)
CMNIST_GRAYSCALE = dict(hidden=83, l2=0.00086028688, lr=0.0028171488, anneal_iters=0, penalty_weight=0.0)
CMNIST_GRAYSCALE_STEPS = 101  # the IRM code trains the grayscale oracle for 101 steps, every other method 501
CMNIST_STEPS = 501
CMNIST_RESTARTS = 10

_CMNIST = {"erm": CMNIST_ERM, "grayscale": CMNIST_GRAYSCALE}


def cmnist_published(method: str) -> dict:
    """The published Colored MNIST hyperparameters of ``method`` (IRM's for IRM, V-REx, MM-REx and RI)."""
    return dict(_CMNIST.get(method, CMNIST_IRM))


def cmnist_random_space(trial: Any) -> dict:
    """IRM code's random search (and the default space of the thesis's 340-configuration searches).

    hidden = int(2^U(6, 9)), l2 = 10^U(-5, -2), lr = 10^U(-3.5, -2.5),
    anneal = randint(50, 250) (numpy's upper bound is exclusive: 50..249),
    penalty = 10^U(2, 6). Suggests ``log2_hidden``, ``l2``, ``lr``,
    ``anneal_iters``, ``penalty_weight``; returns the derived integer ``hidden``.
    """
    log2_hidden = trial.suggest_float("log2_hidden", 6.0, 9.0)
    trial.suggest_float("l2", 1e-5, 1e-2, log=True)
    trial.suggest_float("lr", 10**-3.5, 10**-2.5, log=True)
    trial.suggest_int("anneal_iters", 50, 249)
    trial.suggest_float("penalty_weight", 1e2, 1e6, log=True)
    return {"hidden": int(2**log2_hidden)}


# Toy SEMs (IRM code's experiment_synthetic, REx code's copy): Adam, and the grid of the reference's
# ERM share ``reg`` in loss = reg * sum_e R_e + (1 - reg) * penalty, chosen on the validation domain.
SEM_LR = 1e-3
SEM_STEPS = 100_000
SEM_REGS: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SEM_DIM = 10
SEM_SAMPLES = 1000
SEM_REPETITIONS = 10

# DomainBed (thesis §5.4, the DomainBed suite): its registry for the MNIST datasets (defaults, random ranges, drawn with
# seed_hash and numpy RandomState exactly as domainbed/hparams_registry.py draws them) is core.domainbed.hparams;
# these are its entry points.
from core.domainbed.hparams import (  # noqa: E402
    CHECKPOINT_FREQ as DOMAINBED_CHECKPOINT_FREQ,
    STEPS as DOMAINBED_STEPS,
    default_hparams as domainbed_defaults,
    hparams_for as domainbed_hparams,
    run_seed as domainbed_run_seed,
)
