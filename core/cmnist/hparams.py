"""Colored MNIST's published values and search spaces live here (the registry rule: each core part's in ``core/<part>/hparams.py``).

Presets, searches, dataclass defaults, tests and benchmarks read these; nothing
else writes a published value down. Values: the IRM code
(facebookresearch/InvariantRiskMinimization ``code/colored_mnist/main.py``),
tuned by its random search; thesis Table 5.1: REx used the exact same
hyperparameters as IRM, only replacing the penalty, and so does RI. The search
space is a define-by-run function of a trial object with Optuna's
``suggest_float`` / ``suggest_int`` (an Optuna trial in the pipelines; core
never imports Optuna) returning the derived config values.
"""
from __future__ import annotations

from typing import Any

IRM = dict(hidden=390, l2=0.00110794568, lr=0.0004898536566546834, anneal_iters=190, penalty_weight=91257.18613115903)
ERM = dict(hidden=256, l2=0.001, lr=0.001, anneal_iters=0, penalty_weight=0.0)
GRAYSCALE = dict(hidden=83, l2=0.00086028688, lr=0.0028171488, anneal_iters=0, penalty_weight=0.0)
GRAYSCALE_STEPS = 101  # the IRM code trains the grayscale oracle for 101 steps, every other method 501
STEPS = 501
RESTARTS = 10
SEARCH_SAMPLES = 340  # thesis: the 340-configuration random searches (cmnist-search, rex-vs-irm paper presets)
SHIFT_PS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # thesis Figure 5.4: the covariate shift p between training domains
# The thesis's random searches (§5.4.1): "for small values of p, IRM never achieves better than random chance
# performance, while REx does better than random in 4.4%/23.7%/2.0% of trials, respectively, in the class/digit/color
# imbalance scenarios for p = 0.1/0.1/0.2" (340 configurations each). Per variant: (that p, REx's share in %).
SEARCH_ABOVE_CHANCE = {"class": (0.1, 4.4), "digit": (0.1, 23.7), "color": (0.2, 2.0)}

_PUBLISHED = {"erm": ERM, "grayscale": GRAYSCALE}


def published(method: str) -> dict:
    """The published Colored MNIST hyperparameters of ``method`` (IRM's for IRM, V-REx, MM-REx and RI)."""
    return dict(_PUBLISHED.get(method, IRM))


def random_space(trial: Any) -> dict:
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
