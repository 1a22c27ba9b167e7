"""docs/adding-an-experiment.md, checked: a tiny two-stage pipeline with its own data, through the real runner.

The pipeline below is declared here, in a test file, and touches no runner
file: it loads its own data, declares a grid stage and a block-search stage
(Optuna, paired draws), and every row carries its stage.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Search, Setting, Stage, resolve_settings
from pipelines.engine.store import ResultStore
from tasks.report import Report, tune_reporter, units


# --- core: plain numpy, no Ray ----------------------------------------------------------------
@dataclass(frozen=True)
class Targets:
    """The data: points whose mean the model must find."""

    values: np.ndarray

    @property
    def fingerprint(self) -> str:
        return "targets:" + hashlib.sha1(self.values.tobytes()).hexdigest()[:12]


def fit_means(values: np.ndarray, lrs: list[float], steps: int, seeds: list[int], on_step) -> list[float]:
    """K models side by side: gradient descent on mean((w_k - v)^2) from w_k ~ N(0, 1) (seed k); final losses."""
    w = np.array([np.random.default_rng(seed).normal() for seed in seeds])
    lr = np.array(lrs)
    for step in range(steps):
        losses = ((w[:, None] - values) ** 2).mean(axis=1)
        on_step(step, losses.tolist())
        w -= lr * (2 * (w[:, None] - values)).mean(axis=1)
    return losses.tolist()


# --- task: one trainable, knows no search -------------------------------------------------------
def mean_trainable(config: dict, data: Targets) -> None:
    """Trains the config, or each configuration of its block (``units``), and reports them together."""
    report = tune_reporter()
    configs, steps = units(config), int(config["steps"])

    def on_step(step: int, losses: list[float]) -> None:
        report(Report(step=step, final=step == steps - 1, models=[{"step": step, "loss": loss} for loss in losses]))

    fit_means(data.values, [float(c["lr"]) for c in configs], steps, [int(c["seed"]) for c in configs], on_step)


# --- pipeline: settings, presets, data, stages, report ----------------------------------------
SETTINGS = {
    "points": Setting(5, "number of target points", ge=1),
    "lrs": Setting([0.1, 0.5], "stage grid: learning rates", gt=0),
    "budget": Setting(4, "stage search: configurations per study", ge=1),
    "steps": Setting(4, "gradient steps", ge=1),
}


def load_targets(settings: dict, data_dir: str | None) -> Targets:
    return Targets(np.linspace(0.0, 1.0, settings["points"]))


def stages(settings: dict) -> list[Stage]:
    grid = Grid([dict(lr=lr, seed=0, steps=settings["steps"]) for lr in settings["lrs"]])
    space = lambda trial: {"lr": trial.suggest_float("lr", 0.01, 0.9, log=True)}  # noqa: E731
    search = Search(studies=[dict(steps=settings["steps"], arm=a) for a in ("a", "b")], space=space,
                    budget=settings["budget"], study_name=lambda s: s["arm"], block_size=2, paired_by=("steps",))
    return [
        Stage("grid", mean_trainable, grid, metric="loss", mode="min", label=lambda c: f"lr={c['lr']:.3g}"),
        Stage("search", mean_trainable, search, metric="loss", mode="min", label=lambda c: f"{c['arm']} lr={c['lr']:.3g}"),
    ]


def report(trials, curves, out_dir: str) -> str:
    return trials.groupby("stage")["loss"].min().to_string()


PIPELINE = Pipeline(
    name="tiny-mean", description="Find a mean by gradient descent", settings=SETTINGS,
    presets={"smoke": {}, "paper": {"points": 50}}, load_data=load_targets, stages=stages, report=report,
    run_defaults={"gpus_per_trial": 0.0},
)


def test_settings_are_checked_before_anything_runs():
    with pytest.raises(GensweepError, match="bad value for lrs: -0.1"):
        resolve_settings(PIPELINE, "smoke", ["lrs=0.1,-0.1"])
    assert resolve_settings(PIPELINE, "paper", ["budget=2"])["points"] == 50


def test_a_two_stage_pipeline_runs_end_to_end(ray_session, tmp_path):
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers need not import this test module
    results = str(tmp_path)
    settings = resolve_settings(PIPELINE, "smoke", [])
    summary = run_sweep(Sweep(PIPELINE, "smoke", settings, results, quiet=True))
    assert summary["complete"] and summary["total"] == 2 + 2 * 4 and summary["failed"] == 0

    rows = ResultStore.open(results).read("trials", "tiny-mean")
    assert rows.groupby("stage").size().to_dict() == {"grid": 2, "search": 8} and rows["trial_key"].is_unique
    assert set(rows["data"]) == {load_targets(settings, None).fingerprint}
    search = rows[rows["stage"] == "search"]
    # Paired: both studies trained the same draws, sample i with seed i.
    by_arm = {arm: g.sort_values("sample")[["sample", "lr", "seed"]].values.tolist() for arm, g in search.groupby("arm")}
    assert by_arm["a"] == by_arm["b"] and [r[0] for r in by_arm["a"]] == [0, 1, 2, 3]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert [n.rsplit("/", 2)[-2:] for n in names] == [["search", "a"], ["search", "b"]]
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gensweep/tiny-mean")
    assert len(client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'")) == 10

    again = run_sweep(Sweep(PIPELINE, "smoke", settings, results, quiet=True))
    assert again["ran"] == 0 and again["skipped"] == 10

