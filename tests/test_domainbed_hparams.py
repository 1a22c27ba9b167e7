"""DomainBed's hyperparameter draws and run seeds (core/domainbed/hparams.py) against the formula, computed here.

DomainBed (hparams_registry.py, lib/misc.py, scripts/train.py, scripts/sweep.py):
seed_hash(*args) = int(md5(str(args)).hexdigest(), 16) % 2^31; hyperparameter
``name`` of draw (hparams_seed h > 0, trial_seed t) comes from
RandomState(seed_hash(seed_hash(h, t), name)); h = 0 is the defaults; a run's
seed is seed_hash(dataset, algorithm, test_envs as a list, h, t).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from core.domainbed import hparams


def md5_seed(*args) -> int:
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % 2**31


def state(h: int, t: int, name: str) -> np.random.RandomState:
    return np.random.RandomState(md5_seed(md5_seed(h, t), name))


@pytest.mark.parametrize("h,t", [(1, 0), (2, 0), (7, 1), (19, 2)])
def test_draws_equal_domainbed_formula(h, t):
    irm = hparams.hparams_for("IRM", h, t)
    assert irm["lr"] == 10 ** state(h, t, "lr").uniform(-4.5, -2.5)
    assert irm["batch_size"] == int(2 ** state(h, t, "batch_size").uniform(3, 9))
    assert irm["irm_lambda"] == 10 ** state(h, t, "irm_lambda").uniform(-1, 5)
    assert irm["irm_penalty_anneal_iters"] == int(10 ** state(h, t, "irm_penalty_anneal_iters").uniform(0, 4))
    assert irm["weight_decay"] == 0.0
    vrex = hparams.hparams_for("VREx", h, t)
    assert vrex["vrex_lambda"] == 10 ** state(h, t, "vrex_lambda").uniform(-1, 5)
    assert vrex["vrex_penalty_anneal_iters"] == int(10 ** state(h, t, "vrex_penalty_anneal_iters").uniform(0, 4))
    assert hparams.hparams_for("GroupDRO", h, t)["groupdro_eta"] == 10 ** state(h, t, "groupdro_eta").uniform(-3, -1)
    # a value depends on (h, t, name) only: every algorithm of a trial gets the same lr and batch size
    assert vrex["lr"] == irm["lr"] and hparams.hparams_for("ERM", h, t)["batch_size"] == irm["batch_size"]
    assert all(type(v) in (float, int, bool) for v in irm.values())


def test_draws_differ_across_trials_and_draws():
    lrs = {hparams.hparams_for("ERM", h, t)["lr"] for h in (1, 2) for t in (0, 1)}
    assert len(lrs) == 4


def test_hparams_seed_zero_is_the_defaults():
    assert hparams.hparams_for("IRM", 0, 2) == {"class_balanced": False, "irm_lambda": 1e2, "irm_penalty_anneal_iters": 500,
                                                "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64}
    assert hparams.hparams_for("VREx", 0, 0)["vrex_lambda"] == 1e1
    assert hparams.hparams_for("GroupDRO", 0, 0)["groupdro_eta"] == 1e-2


def test_run_seed_and_test_environment_sets():
    assert hparams.seed_hash(3, "lr") == md5_seed(3, "lr")
    assert hparams.run_seed("ColoredMNIST", "IRM", (0, 2), 5, 1) == md5_seed("ColoredMNIST", "IRM", [0, 2], 5, 1)
    assert hparams.test_env_combinations(3) == [(0,), (0, 1), (0, 2), (1,), (1, 2), (2,)]  # sweep.py's order
    assert len(hparams.test_env_combinations(6)) == 21 and hparams.test_env_combinations(3, pairs=False) == [(0,), (1,), (2,)]
