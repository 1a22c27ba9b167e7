"""Finished paired draws go into their Optuna study in one transaction; the trials equal Optuna's own add_trials."""
from __future__ import annotations

import math

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipelines.engine.studies import Draw, add_trials, finished_trial

DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "hidden": IntDistribution(32, 512), "x": FloatDistribution(0, 1)}


def _trials():
    values = [0.5, float("nan"), 0.25, math.inf]
    return [finished_trial(Draw({"lr": 10 ** -(i + 1), "hidden": 32 * (i + 1), "x": i / 4}, DISTRIBUTIONS, {}), v, i) for i, v in enumerate(values)]


def _view(study):
    return [(t.number, t.state, t.value, t.params, t.distributions, t.user_attrs) for t in study.get_trials()]


def test_batched_add_equals_optuna_add_trials(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    ours = optuna.create_study(study_name="ours", storage=storage)
    theirs = optuna.create_study(study_name="theirs", storage=storage)
    add_trials(ours, _trials()[:2])
    add_trials(ours, _trials()[2:])
    theirs.add_trials(_trials())
    assert _view(optuna.load_study(study_name="ours", storage=storage)) == _view(optuna.load_study(study_name="theirs", storage=storage))
    states = [t.state for t in ours.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_in_memory_studies_take_optuna_add_trials():
    study = optuna.create_study()
    add_trials(study, _trials())
    assert [t.user_attrs["sample"] for t in study.get_trials()] == [0, 1, 2, 3]
