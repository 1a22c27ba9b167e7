"""The domainbed pipeline: its stages per preset, DomainBed's draws as Optuna studies, bad settings, and a tiny sweep
through the real runner (Ray, Parquet, MLflow, Optuna) rendered by the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from core.domainbed import hparams as dbh
from pipelines import registry
from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import GensweepError, resolve_settings
from pipelines.engine.store import ResultStore
from pipelines.rex import domainbed
from test_cmnist_data import write_idx

PIPELINE = registry.get("domainbed")


def _stages(preset: str, *sets: str):
    return domainbed.stages(resolve_settings(PIPELINE, preset, list(sets)))


def test_paper_preset_is_domainbeds_sweep():
    colored, rotated = _stages("paper")
    assert (colored.name, rotated.name) == ("ColoredMNIST", "RotatedMNIST")
    assert len(colored.plan.studies) == 5 * 3 and colored.plan.budget == 20 * 6  # (algorithm, trial) x (draws x test-env sets)
    assert len(rotated.plan.studies) == 15 and rotated.plan.budget == 20 * 21
    fixed = colored.plan.studies[0]
    assert (fixed["steps"], fixed["checkpoint_freq"], fixed["width"], fixed["anneal_scale"]) == (5001, 100, 1.0, 1.0)
    assert colored.plan.block_size == 6 and colored.metric == "val_acc"


def test_draws_are_domainbeds():
    stage = _stages("paper")[0]
    fixed = next(s for s in stage.plan.studies if s["method"] == "irm" and s["trial_seed"] == 2)
    draws = stage.plan.draws(fixed)
    assert len(draws) == stage.plan.budget
    first = draws[0]  # hparams_seed 0: the defaults, test environment 0
    assert first["params"] == {"lr": 1e-3, "batch_size": 64, "irm_lambda": 1e2, "irm_penalty_anneal_iters": 500, "test_envs": "0"}
    assert first["derived"]["seed"] == dbh.run_seed("ColoredMNIST", "IRM", [0], 0, 2)
    later = draws[6 * 7 + 4]  # hparams_seed 7, the fifth test-environment set (1, 2)
    drawn = dbh.random_hparams("IRM", dbh.seed_hash(7, 2))
    assert later["params"]["test_envs"] == "1,2" and later["params"]["lr"] == drawn["lr"]
    assert later["params"]["irm_penalty_anneal_iters"] == drawn["irm_penalty_anneal_iters"]
    assert later["derived"] == {"hparams_seed": 7, "seed": dbh.run_seed("ColoredMNIST", "IRM", [1, 2], 7, 2), "weight_decay": 0.0}
    for draw in draws:  # every value lies in its recorded Optuna distribution
        for name, value in draw["params"].items():
            dist = draw["distributions"][name]
            assert dist._contains(dist.to_internal_repr(value)), (name, value)
    assert len({d["params"]["batch_size"] for d in draws[6:12]}) == 1  # a draw's runs share their batch size (one block)


def test_presets_size_the_sweep():
    (smoke_colored, smoke_rotated) = _stages("smoke")
    assert smoke_colored.plan.budget == 2 * 6 and smoke_rotated.plan.budget == 2 * 6  # rotated: single test envs only
    (mnist,) = _stages("mnist")
    assert mnist.name == "ColoredMNIST" and len(mnist.plan.studies) == 3 * 2 and mnist.plan.budget == 3 * 6
    assert mnist.plan.studies[0]["anneal_scale"] == 0.1
    smoke_sizes = {d["params"]["batch_size"] for s in smoke_colored.plan.studies for d in smoke_colored.plan.draws(s)}
    mnist_sizes = {d["params"]["batch_size"] for s in mnist.plan.studies for d in mnist.plan.draws(s)}
    assert (smoke_colored.plan.studies[0]["steps"], smoke_colored.plan.studies[0]["anneal_scale"]) == (201, 0.04)  # 201 / 5001
    assert smoke_sizes == {32}  # DomainBed's draws (64 and 372 here) capped: minutes on 2 cores
    assert max(mnist_sizes) > 32 and 64 in mnist_sizes  # the mnist preset keeps DomainBed's draws


def test_bad_settings():
    with pytest.raises(GensweepError, match="checkpoint_freq"):
        resolve_settings(PIPELINE, "smoke", ["steps=10", "checkpoint_freq=50"])
    with pytest.raises(GensweepError, match="bad value for algorithms"):
        resolve_settings(PIPELINE, "smoke", ["algorithms=erm,ri"])


def _write_idx(directory: Path, n: int) -> None:
    rng = np.random.RandomState(0)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", rng.randint(0, 10, n))


@pytest.fixture(scope="module")
def tiny_sweep(ray_session, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    _write_idx(data, 150)
    results = str(tmp_path_factory.mktemp("results"))
    sets = ["datasets=ColoredMNIST", "algorithms=erm,irm", "n_hparams=2", "steps=3", "checkpoint_freq=2", "width=0.125"]
    sweep = Sweep(PIPELINE, "smoke", resolve_settings(PIPELINE, "smoke", sets), results, data_dir=str(data), quiet=True)
    return sweep, run_sweep(sweep)


@pytest.mark.e2e
def test_sweep_records_every_checkpoint_and_the_studies(tiny_sweep):
    sweep, summary = tiny_sweep
    assert summary.complete and summary.ran == 24 and summary.failed == 0
    store = ResultStore.open(sweep.results)
    trials = store.read("trials", "domainbed", sweep.id)
    curves = store.read("curves", "domainbed", sweep.id)
    assert len(trials) == 24 and set(trials["test_envs"]) == {"0", "1", "2", "0,1", "0,2", "1,2"}
    assert all(sorted(s) == [0, 2] for s in curves.groupby("trial_key")["step"].apply(list))
    assert curves[[f"env{i}_{s}_acc" for i in range(3) for s in ("in", "out")]].notna().all().all()
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep.results}/optuna.db")
    name = f"domainbed/{sweep.id}/ColoredMNIST/irm/trial=0"
    study = optuna.load_study(study_name=name, storage=storage)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 12
    by_sample = {t.user_attrs["sample"]: t for t in done}
    assert by_sample[7].params["lr"] == dbh.hparams_for("IRM", 1, 0)["lr"] and by_sample[7].params["test_envs"] == "0,1"
    row = trials[(trials["method"] == "irm") & (trials["sample"] == 7)].iloc[0]
    assert by_sample[7].value == pytest.approx(row["val_acc"]) and row["seed"] == dbh.run_seed("ColoredMNIST", "IRM", [0, 1], 1, 0)
    again = run_sweep(Sweep(PIPELINE, "smoke", sweep.settings, sweep.results, data_dir=sweep.data_dir, quiet=True))
    assert again.ran == 0 and again.skipped == 24


@pytest.mark.e2e
def test_report_renders_the_three_tables_and_the_figure(tiny_sweep, tmp_path):
    sweep, _ = tiny_sweep
    store = ResultStore.open(sweep.results)
    text = domainbed.report(store.read("trials", "domainbed", sweep.id), store.read("curves", "domainbed", sweep.id), str(tmp_path))
    for title in ("training-domain validation set", "leave-one-domain-out cross-validation", "test-domain validation set (oracle)"):
        assert f"Model selection: {title}" in text
    assert "| ERM (DomainBed) | 71.7 ± 0.1 | 72.9 ± 0.2 | 10.0 ± 0.1 | 51.5 |" in text
    assert text.count("| IRM |") == 6 and (tmp_path / "selection.png").stat().st_size > 0
