"""docs/adding-an-experiment.md, checked: a tiny pipeline with its own data, through the real runner.

The pipeline below is declared here, in a test file, and touches no engine
file: it loads its own data, declares a grid stage, a block-search stage
(Optuna, paired draws) and a stage built from the search's results (the
best configuration of each study re-trained with 3 seeds), and every row
carries its stage. The driver is also killed between the search and the
stage built from it, and the resumed sweep records everything once.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import ROOT
from pipelines.engine.followup import retrain_best
from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Search, Setting, Stage, resolve_settings
from pipelines.engine.store import ResultStore
from tasks.report import Report, configurations, tune_reporter


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
    """Trains the config, or each configuration of its block (``configurations``), and reports them together."""
    report = tune_reporter()
    configs, steps = configurations(config), int(config["steps"])

    def on_step(step: int, losses: list[float]) -> None:
        report(Report(step=step, final=step == steps - 1, metrics=[{"step": step, "loss": loss} for loss in losses]))

    fit_means(data.values, [float(c["lr"]) for c in configs], steps, [int(c["seed"]) for c in configs], on_step)


# --- pipeline: settings, presets, data, stages, report ----------------------------------------
SETTINGS = {
    "points": Setting(5, "number of target points", ge=1),
    "lrs": Setting([0.1, 0.5], "stage grid: learning rates", gt=0),
    "budget": Setting(4, "stage search: configurations per study", ge=1),
    "steps": Setting(4, "gradient steps", ge=1),
    "retrain_seeds": Setting(3, "stage retrain: seeds of each study's best configuration", ge=1),
}


def load_targets(settings: dict, data_dir: str | None) -> Targets:
    return Targets(np.linspace(0.0, 1.0, settings["points"]))


def stages(settings: dict) -> list[Stage]:
    grid = Grid([dict(lr=lr, seed=0, steps=settings["steps"]) for lr in settings["lrs"]])
    space = lambda trial: {"lr": trial.suggest_float("lr", 0.01, 0.9, log=True)}
    search = Search(studies=[dict(steps=settings["steps"], arm=a) for a in ("a", "b")], space=space,
                    budget=settings["budget"], study_name=lambda s: s["arm"], block_size=2, paired_by=("steps",))
    return [
        Stage("grid", mean_trainable, grid, metric="loss", mode="min", label=lambda c: f"lr={c['lr']:.3g}"),
        Stage("search", mean_trainable, search, metric="loss", mode="min", label=lambda c: f"{c['arm']} lr={c['lr']:.3g}"),
        Stage("retrain", mean_trainable, retrain_best("search", "loss", "min", top=1, seeds=settings["retrain_seeds"]),
              metric="loss", mode="min", label=lambda c: f"{c['arm']} best seed={c['seed']}"),
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


STAGE_ROWS = {"grid": 2, "search": 8, "retrain": 2 * 3}


def check_records(results: str, settings: dict) -> None:
    """Rows = MLflow children = Optuna COMPLETE + grid and retrain rows, nothing twice; retrain trains each study's best."""
    rows = ResultStore.open(results).read("trials", "tiny-mean")
    assert rows.groupby("stage").size().to_dict() == STAGE_ROWS and rows["trial_key"].is_unique
    assert set(rows["data"]) == {load_targets(settings, None).fingerprint}
    search = rows[rows["stage"] == "search"]
    # Paired: both studies trained the same draws, sample i with seed i.
    by_arm = {arm: g.sort_values("sample")[["sample", "lr", "seed"]].values.tolist() for arm, g in search.groupby("arm")}
    assert by_arm["a"] == by_arm["b"] and [r[0] for r in by_arm["a"]] == [0, 1, 2, 3]
    retrain = rows[rows["stage"] == "retrain"]
    for _study, group in search.groupby("study"):
        best = group.sort_values(["loss", "trial_key"]).iloc[0]
        mine = retrain[retrain["retrain_of"] == best["trial_key"]]
        assert sorted(mine["seed"]) == [0, 1, 2] and set(mine["lr"]) == {best["lr"]} and set(mine["arm"]) == {best["arm"]}
        assert set(mine["retrain_source_loss"]) == {best["loss"]}
    assert "study" not in retrain or retrain["study"].isna().all()  # a re-trained configuration belongs to no study
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(results, 'optuna.db')}")
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert [n.rsplit("/", 2)[-2:] for n in names] == [["search", "a"], ["search", "b"]]
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    client = MlflowClient(f"sqlite:///{os.path.join(results, 'mlflow.db')}")
    experiment = client.get_experiment_by_name("gensweep/tiny-mean")
    children = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'")
    assert sorted(r.data.tags["gensweep.trial_key"] for r in children) == sorted(rows["trial_key"])


@pytest.mark.e2e
def test_a_pipeline_with_a_stage_built_from_the_search_runs_end_to_end(ray_session, tmp_path):
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers need not import this test module
    results = str(tmp_path)
    settings = resolve_settings(PIPELINE, "smoke", [])
    summary = run_sweep(Sweep(PIPELINE, "smoke", settings, results, quiet=True))
    assert summary.complete and summary.total == sum(STAGE_ROWS.values()) and summary.failed == 0
    check_records(results, settings)

    again = run_sweep(Sweep(PIPELINE, "smoke", settings, results, quiet=True))
    assert again.ran == 0 and again.skipped == again.total == sum(STAGE_ROWS.values()) and again.complete


# The driver dies between the search and the stage built from it: after the search's last write, before retrain is planned.
KILLED_BETWEEN_STAGES = """
import os, sys
sys.path.insert(0, sys.argv[2])
import ray.cloudpickle as cloudpickle
import test_adding_an_experiment as tiny
from pipelines.engine import runner
from pipelines.engine.spec import resolve_settings

cloudpickle.register_pickle_by_value(tiny)
real = runner.plan_stage

def plan_stage(stage, *args, **kwargs):
    if stage.name == "retrain" and os.environ.get("GENSWEEP_TEST_KILL") == "1":
        os._exit(9)  # SIGKILL-like: no clean-up
    return real(stage, *args, **kwargs)

runner.plan_stage = plan_stage
settings = resolve_settings(tiny.PIPELINE, "smoke", [])
summary = runner.run_sweep(runner.Sweep(tiny.PIPELINE, "smoke", settings, sys.argv[1], num_cpus=2))
print("SUMMARY", summary)
"""


@pytest.mark.e2e
def test_driver_killed_between_the_search_and_the_stage_built_from_it(tmp_path):
    results = tmp_path / "results"
    script = tmp_path / "driver.py"
    script.write_text(KILLED_BETWEEN_STAGES)
    run = lambda kill: subprocess.run(
        [sys.executable, str(script), str(results), str(ROOT / "tests")], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "GENSWEEP_TEST_KILL": kill},
    )
    first = run("1")
    assert first.returncode == 9, first.stdout + first.stderr
    assert "10 of 10 configurations to run (0 already done; then stage retrain, built from their results)" in first.stdout
    rows = ResultStore.open(str(results)).read("trials", "tiny-mean")
    assert rows.groupby("stage").size().to_dict() == {"grid": 2, "search": 8}  # killed with the search done, retrain unplanned

    second = run("0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "6 of 16 configurations to run (10 already done)" in second.stdout  # retrain built at once from the rows
    check_records(str(results), resolve_settings(PIPELINE, "smoke", []))
    third = run("0")
    assert "0 of 16 configurations to run (16 already done)" in third.stdout, third.stdout + third.stderr
