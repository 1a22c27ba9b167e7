"""The memorization pipelines (thesis chapter 3): stages per preset, the trainables' block contract, bad settings,
tiny end-to-end runs through the real runner (Ray, MLflow, Parquet) with their reports (easy, sensitivity,
regularizers), and the other two reports from frames built in-process."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GENSWEEP, ROOT
from core.data import DataError
from core.memorization.data import load_images
from pipelines.memorization import capacity
from pipelines.memorization import common
from pipelines.memorization import csr
from pipelines.memorization import easy
from pipelines.memorization import regularizers
from pipelines.memorization import sensitivity
from pipelines.registry import pipelines
from pipelines.engine.spec import GensweepError, resolve_settings
from tasks import memorization as tasks
from tasks.report import units

ALL = [regularizers, csr, easy, sensitivity, capacity]


def _plan(module, preset: str, overrides=()):
    settings = resolve_settings(module.PIPELINE, preset, list(overrides))
    (stage,) = module.PIPELINE.stages(settings)
    return settings, stage, stage.plan.configs


# ------------------------------------------------------------------------------------------ stages


def test_all_five_are_registered_with_smoke_and_paper():
    known = pipelines()
    for module in ALL:
        assert known[module.PIPELINE.name] is module.PIPELINE
        assert {"smoke", "paper"} <= set(module.PIPELINE.presets)
        for setting in module.PIPELINE.settings.values():
            assert setting.help and "\n" not in setting.help


def test_regularizer_stages():
    _, stage, configs = _plan(regularizers, "smoke")
    # 2 datasets x (baseline + 5 regularizers x 2 values + 1 adversarial pair)
    assert len(configs) == 2 * (1 + 5 * 2 + 1) and stage.metric == "best_val_acc"
    assert {c["noise"] for c in configs} == {"real", "randY"} and all(c["optimizer"] == "adam" for c in configs)
    adv = [c for c in configs if c["regularizer"] == "adversarial"]
    assert [(c["value"], c["adv_dropout"]) for c in adv] == [(0.5, 0.2)] * 2
    _, _, paper = _plan(regularizers, "paper")
    assert len(paper) == 2 * (1 + 5 + 5 + 5 + 4 + 5 + 9)
    assert all(c["model"] == "cnn" and c["optimizer"] == "sgd" and c["momentum"] == 0.9 and c["lr_step"] == 15 for c in paper)
    assert max(c["value"] for c in paper if c["regularizer"] == "input_noise") == 5.0


def test_csr_stages():
    _, stage, configs = _plan(csr, "smoke")
    assert [(c["noise"], c["fraction"]) for c in configs] == [("real", 0.0), ("randX", 0.5), ("randX", 1.0), ("randY", 0.5), ("randY", 1.0)]
    assert all(c["csr_examples"] == 100 and c["lass_iters"] == 100 for c in configs) and stage.metric == "csr"
    _, _, paper = _plan(csr, "paper")
    assert len(paper) == 1 + 2 * 5 and all(c["csr_examples"] == 500 and c["width"] == 4096 and c["lr"] == 0.01 for c in paper)


def test_easy_stages_block_the_seeds():
    _, _, configs = _plan(easy, "smoke")
    assert [c["noise"] for c in configs] == ["real", "randX", "randY"]
    assert all([u["seed"] for u in units(c)] == list(range(100)) and c["epochs"] == 1 for c in configs)
    _, _, paper = _plan(easy, "paper")
    assert len(paper) == 3 * 5 and sum(len(c["block"]) for c in paper) == 300
    seeds = sorted(u["seed"] for c in paper if c["noise"] == "real" for u in units(c))
    assert seeds == list(range(100)) and paper[0]["width"] == 4096


def test_sensitivity_stages():
    settings, _, configs = _plan(sensitivity, "smoke")
    assert [(c["inputs"], c["labels"]) for c in configs] == [("real", "normal"), ("real", "oneclass"), ("random", "normal"), ("random", "oneclass")]
    assert all(c["width"] == 16 and len(c["block"]) == 2 for c in configs) and settings["n_train"] == 1000


def test_capacity_stages():
    _, _, configs = _plan(capacity, "smoke")
    assert len(configs) == 3 * 2
    width = [c for c in configs if c["part"] == "width"]
    assert sorted({u["width"] for c in width for u in units(c)}) == [16, 64, 256] and {c["fraction"] for c in width} == {0.0, 0.5, 1.0}
    size = [c for c in configs if c["part"] == "size"]
    assert sorted({u["n_train"] for c in size for u in units(c)}) == [125, 250, 500] and {u["width"] for c in size for u in units(c)} == {256}
    _, _, paper = _plan(capacity, "paper")
    assert len(paper) == 5 * 2 and max(u["width"] for c in paper for u in units(c)) == 8192


def test_bad_settings_fail_before_anything_runs():
    with pytest.raises(GensweepError, match="bad value for fractions: 1.5"):
        resolve_settings(csr.PIPELINE, "smoke", ["fractions=0.5,1.5"])
    with pytest.raises(GensweepError, match="sizes: 800 is more than n_train=500"):
        resolve_settings(capacity.PIPELINE, "smoke", ["sizes=100,800"])
    with pytest.raises(GensweepError, match="bad value for regularizers: 'mixup'"):
        resolve_settings(regularizers.PIPELINE, "smoke", ["regularizers=dropout,mixup"])


@pytest.mark.parametrize("args, message", [
    (["run", "memorization-csr", "--set", "dataset=mnist"], "mnist needs a data directory"),
    (["run", "memorization-capacity", "--set", "n_train=5000"], "lower n_train"),
])
def test_cli_one_line_errors(args, message, tmp_path):
    proc = subprocess.run(GENSWEEP + args + ["--results", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gensweep: error: ") and message in lines[0], proc.stderr


def test_load_data_auto_and_errors(tmp_path):
    settings = resolve_settings(csr.PIPELINE, "smoke", [])
    data = common.load_data(settings, None)
    assert len(data.train) == 500 and len(data.val) == 397 and data.fingerprint.startswith("digits/train:")
    small = common.load_data({**settings, "n_train": 1000, "n_val": 1}, None, downscale=2)
    assert small.train.x.shape[1:] == (1, 14, 14)
    with pytest.raises(DataError, match="data directory not found"):
        common.load_data(settings, str(tmp_path / "nope"))
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt data file|data file not found"):
        common.load_data(settings, str(tmp_path))  # auto: a directory with CIFAR-10 batches


# ---------------------------------------------------------------------------------- trainables


@pytest.fixture(scope="module")
def tiny() -> tasks.MemData:
    train, val = load_images("digits", None, n_train=120, n_val=40)
    return tasks.MemData(train, val)


def test_noise_sets_are_cached_and_leave_validation_clean(tiny):
    a = tasks.training_set(tiny, "randY", 0.5, 3)
    assert a is tasks.training_set(tiny, "randY", 0.5, 3) and torch.equal(a.x, tiny.train.x) and not torch.equal(a.y, tiny.train.y)
    x = tasks.training_set(tiny, "randX", 1.0, 3, n_train=50)
    assert len(x) == 50 and torch.equal(x.y, tiny.train.y[:50]) and tiny.val.x.equal(load_images("digits", None, n_train=120, n_val=40)[1].x)


def test_bits_roundtrip():
    mask = torch.rand(1001, generator=torch.Generator().manual_seed(0)) < 0.3
    assert np.array_equal(tasks.decode_bits(tasks.encode_bits(mask), 1001), mask.numpy())


def test_easy_block_equals_seeds_run_alone(tiny):
    base = dict(noise="real", fraction=1.0, width=16, epochs=1, batch_size=16, lr=0.05, data_seed=0)
    block, alone = [], []
    tasks.run_easy(dict(base, block=[{"seed": 0}, {"seed": 1}, {"seed": 2}]), tiny, block.append)
    for seed in (0, 1, 2):
        tasks.run_easy(dict(base, seed=seed), tiny, alone.append)
    assert block[-1].final and len(block[-1].models) == 3
    for i, report in enumerate(alone):
        (single,) = report.models
        assert single["wrong_bits"] == block[-1].models[i]["wrong_bits"]
        assert single["train_acc"] == pytest.approx(block[-1].models[i]["train_acc"], abs=1e-9)


def test_capacity_reports_every_epoch_for_every_unit(tiny):
    out = []
    config = dict(noise="randX", fraction=0.5, epochs=30, batch_size=32, lr=0.1, data_seed=0,
                  block=[{"width": w, "n_train": 60, "seed": s} for w in (8, 64) for s in (0, 1)])
    tasks.run_capacity(config, tiny, out.append)
    assert out[-1].final and not any(r.final for r in out[:-1]) and all(len(r.models) == 4 for r in out)
    assert [r.step for r in out] == list(range(1, len(out) + 1))
    last = out[-1].models
    assert all(m["n_examples"] == 60 for m in last)
    for m in last:
        assert (m["fit"] and m["epochs_to_fit"] <= 30) or (not m["fit"] and np.isnan(m["epochs_to_fit"]))


def test_sensitivity_measures_from_the_first_full_epoch(tiny):
    out = []
    config = dict(inputs="real", labels="normal", width=4, steps=7, measure_every=2, batch_size=40, lr=0.1, data_seed=0,
                  block=[{"seed": 0}, {"seed": 1}])
    tasks.run_sensitivity(config, tiny, out.append)
    assert [r.step for r in out] == [4, 6, 7] and [r.final for r in out] == [False, False, True]
    assert all(len(r.models) == 2 and 0 <= r.models[0]["gini"] < 1 for r in out)
    matrix = np.array(__import__("json").loads(out[-1].models[1]["class_matrix"]))
    assert matrix.shape == (10, 10) and (matrix >= 0).all() and out[0].models[0]["class_matrix"] == ""


def test_regularizer_kwargs():
    assert tasks.regularizer_kwargs("adversarial", 0.5, 0.2) == ({"dropout": 0.2}, {"adversarial_weight": 0.5})
    assert tasks.regularizer_kwargs("weight_decay", 0.01) == ({}, {"weight_decay": 0.01})
    assert tasks.regularizer_kwargs("input_noise", 2.0) == ({"input_noise": 2.0}, {})
    with pytest.raises(ValueError):
        tasks.regularizer_kwargs("mixup", 1.0)


# ---------------------------------------------------------------------- end to end (real runner)

TINY = {
    easy: ["runs=4", "block_size=2", "n_train=100", "n_val=40", "width=16"],
    capacity: ["n_train=80", "n_val=40", "fractions=0,1", "widths=8,32", "sizes=40,80", "size_width=32", "seeds=2", "epochs=20"],
    sensitivity: ["n_train=100", "seeds=1", "steps=8", "measure_every=2", "batch_size=20", "inputs=real,random", "labels=normal"],
    csr: ["n_train=100", "n_val=40", "width=32", "epochs=2", "noises=randY", "fractions=1", "csr_examples=10", "lass_iters=5"],
    regularizers: ["n_train=100", "n_val=40", "width=32", "epochs=2", "regularizers=dropout,adversarial", "dropout=0.5", "lass_iters=2"],
}
FIGURES = {easy: ["easy_examples.png"], capacity: ["capacity.png"], sensitivity: ["gini.png", "class_matrix.png"],
           csr: ["csr.png"], regularizers: ["regularizers.png", "curves.png"]}
ROWS = {easy: 12, capacity: 2 * 2 * 4, sensitivity: 2, csr: 2, regularizers: 2 * 3}


def _frames_without_ray(module, settings):
    """Trial and curve frames as the sink writes them (one row per unit, curve rows per report), trainables run in-process."""
    import pandas as pd

    from pipelines.engine.spec import trial_key

    (stage,) = module.PIPELINE.stages(settings)
    data = module.PIPELINE.load_data(settings, None)
    run = {csr: tasks.run_csr, capacity: tasks.run_capacity}[module]
    trials, curves = [], []
    for config in stage.plan.configs:
        out = []
        run({**config, "stage": stage.name}, data, out.append)
        assert out[-1].final and not any(r.final for r in out[:-1])
        for i, unit in enumerate(units(config)):
            key = trial_key(unit)
            trials.append({**unit, **out[-1].models[i], "trial_key": key, "stage": stage.name})
            curves += [{"trial_key": key, **r.models[i]} for r in out]
    return pd.DataFrame(trials), pd.DataFrame(curves)


@pytest.mark.parametrize("module", [csr, capacity], ids=lambda m: m.PIPELINE.name)
def test_report_from_frames(module, tmp_path):
    settings = resolve_settings(module.PIPELINE, "smoke", TINY[module])
    trials, curves = _frames_without_ray(module, settings)
    assert len(trials) == ROWS[module]
    markdown = module.PIPELINE.report(trials, curves, str(tmp_path))
    assert "|" in markdown
    for name in FIGURES[module]:
        assert (tmp_path / name).stat().st_size > 5000, name


@pytest.mark.parametrize("module", [easy, sensitivity, regularizers], ids=lambda m: m.PIPELINE.name)
def test_tiny_run_end_to_end(module, ray_session, tmp_path):
    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.store import ResultStore

    settings = resolve_settings(module.PIPELINE, "smoke", TINY[module])
    summary = run_sweep(Sweep(module.PIPELINE, "smoke", settings, str(tmp_path), quiet=True, num_cpus=2))
    assert summary["complete"] and summary["failed"] == 0 and summary["total"] == ROWS[module]
    store = ResultStore.open(str(tmp_path))
    trials = store.read("trials", module.PIPELINE.name)
    curves = store.read("curves", module.PIPELINE.name)
    assert len(trials) == ROWS[module] and trials["trial_key"].is_unique and not curves.empty
    if module is easy:
        assert trials.groupby("noise")["seed"].apply(sorted).to_dict() == {n: [0, 1, 2, 3] for n in ("real", "randX", "randY")}
        assert all(len(tasks.decode_bits(t, 100)) == 100 for t in trials["wrong_bits"])
        assert all(len(t) == 100 and t.isdigit() for t in trials["labels"])
    out = tmp_path / "report"
    out.mkdir()
    markdown = module.PIPELINE.report(trials, curves, str(out))
    assert "|" in markdown
    for name in FIGURES[module]:
        assert (out / name).stat().st_size > 5000, name
