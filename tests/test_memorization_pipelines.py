"""The memorization pipelines (thesis chapter 3): presets against the chapter's protocol, stages, the trainables
(clean validation data, blocks equal to runs alone, the same budget for every width), bad settings and data, every
report's numbers against the frames they come from, and tiny end-to-end runs through the real runner (Ray, MLflow,
Parquet) for easy, sensitivity and regularizers."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import GENSWEEP, ROOT
from core.data import DataError
from core.memorization import data as mdata
from core.memorization.data import load_images
from core.memorization.models import mlp
from core.memorization.sensitivity import gini, per_class_matrix, sgd_batches, unrolled_sensitivity
from core.memorization.train import stream_seed, train
from pipelines.engine.spec import GensweepError, resolve_settings, trial_key
from pipelines.memorization import capacity, common, csr, easy, regularizers, sensitivity
from pipelines.registry import pipelines
from tasks import memorization as tasks
from tasks.report import configurations

ALL = [regularizers, csr, easy, sensitivity, capacity]


pytestmark = pytest.mark.usefixtures("one_thread")


def _plan(module, preset: str, overrides=()):
    settings = resolve_settings(module.PIPELINE, preset, list(overrides))
    (stage,) = module.PIPELINE.stages(settings)
    return settings, stage, stage.plan.configs


# ------------------------------------------------------------------------------ presets and protocol


def test_all_five_are_registered_with_smoke_mnist_and_paper():
    known = pipelines()
    for module in ALL:
        assert known[module.PIPELINE.name] is module.PIPELINE
        assert {"smoke", "mnist", "paper"} <= set(module.PIPELINE.presets)
        assert set(module.PIPELINE.preset_help) == set(module.PIPELINE.presets)  # every preset says what it is
        for setting in module.PIPELINE.settings.values():
            assert setting.help and "\n" not in setting.help


# per pipeline: what the experiment itself fixes (not a departure from §3.2) and what it varies
OWN = {easy: ({"epochs": 1}, ()), sensitivity: ({"width": 16}, ()), capacity: ({}, ("width",)), csr: ({}, ()), regularizers: ({}, ())}


@pytest.mark.parametrize("module", ALL, ids=lambda m: m.PIPELINE.name)
def test_non_smoke_presets_follow_the_chapters_optimizer_and_name_every_other_departure(module):
    """§3.2: MLPs by SGD lr 0.01 (no momentum), the CNN by SGD momentum 0.9, lr 0.01 halved every 15 epochs. Where a
    preset departs in width or epochs, its help names the value it uses."""
    expected, varied = OWN[module]
    for preset in set(module.PIPELINE.presets) - {"smoke"}:
        _, _, configs = _plan(module, preset)
        help_text = module.PIPELINE.preset_help[preset]
        for configuration in (u for c in configs for u in configurations(c)):
            model = configuration.get("model", "mlp")
            chapter = common.CHAPTER[model]
            for key in ("optimizer", "lr", "momentum", "lr_step"):
                assert configuration.get(key, {"optimizer": "sgd", "momentum": 0.0, "lr_step": 0}.get(key)) == chapter[key], (preset, key)
            for key in ("width", "epochs"):
                want = expected.get(key, chapter.get(key))
                if key in configuration and key not in varied and want is not None and configuration[key] != want:
                    assert f"{configuration[key]}" in help_text, (module.PIPELINE.name, preset, key, configuration[key])
        if module is capacity:
            settings = resolve_settings(capacity.PIPELINE, preset, [])
            assert settings["size_width"] == 4096 or str(settings["size_width"]) in help_text


def test_list_prints_each_presets_help(capsys):
    from pipelines.cli import cmd_list

    assert cmd_list(None) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("memorization-csr:")))
    mnist = next(line for line in lines[start:] if line.startswith("  preset mnist:"))
    assert mnist.endswith("# " + csr.PRESET_HELP["mnist"]) and "width=512" in mnist


def test_mnist_presets_say_they_use_the_test_split():
    for module in ALL:
        assert "10,000" in module.PIPELINE.preset_help["mnist"] and "test" in module.PIPELINE.preset_help["mnist"]


# ------------------------------------------------------------------------------------------ stages


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
    settings, _, mnist = _plan(regularizers, "mnist")
    assert {c["regularizer"] for c in mnist} == {"none", *regularizers.REGULARIZERS}  # all six
    assert all(c["lass_iters"] == 100 and c["lass_min_new"] == 20 for c in mnist)  # the reference's LASS
    assert settings["seeds"] >= 2 and settings["n_train"] == 1000


def test_csr_stages():
    _, stage, configs = _plan(csr, "smoke")
    assert [(c["noise"], c["fraction"]) for c in configs] == [("real", 0.0), ("randX", 0.5), ("randX", 1.0), ("randY", 0.5), ("randY", 1.0)]
    assert all(c["csr_examples"] == 100 and c["lass_iters"] == 100 and c["lass_min_new"] == 20 for c in configs) and stage.metric == "csr"
    _, _, paper = _plan(csr, "paper")
    assert len(paper) == 3 * (1 + 2 * 5) and all(c["csr_examples"] == 500 and c["width"] == 4096 and c["lr"] == 0.01 for c in paper)
    settings, _, mnist = _plan(csr, "mnist")
    assert 1.0 in settings["fractions"] and settings["seeds"] >= 2 and all(c["csr_examples"] == 500 for c in mnist)
    for preset, fractions in (("cifar10", [0.2, 0.4, 0.6, 0.8]), ("cifar10-random", [1.0])):
        settings, _, cifar = _plan(csr, preset)
        assert settings["dataset"] == "cifar10" and settings["fractions"] == fractions
        assert all(c["model"] == "cnn" and c["momentum"] == 0.9 and c["lr_step"] == 15 and c["lr"] == 0.01 for c in cifar)


def test_easy_stages_block_the_seeds():
    _, _, configs = _plan(easy, "smoke")
    assert [c["noise"] for c in configs] == ["real"] * 2 + ["randX"] * 2 + ["randY"] * 2
    assert all(c["epochs"] == 1 and len(c["block"]) == 50 for c in configs)
    assert sorted(u["seed"] for c in configs if c["noise"] == "randX" for u in configurations(c)) == list(range(100))
    for preset in ("mnist", "paper"):  # the chapter's Fig 3.1: 1,000 examples, 100 one-epoch runs, 2 x 4096, SGD lr 0.01
        settings, _, configs = _plan(easy, preset)
        assert settings["n_train"] == 1000 and settings["runs"] == 100
        assert all(c["width"] == 4096 and c["lr"] == 0.01 and c["epochs"] == 1 for c in configs)
        seeds = sorted(u["seed"] for c in configs if c["noise"] == "real" for u in configurations(c))
        assert seeds == list(range(100)) and len(configs) == 3 * 5


def test_sensitivity_stages():
    settings, _, configs = _plan(sensitivity, "smoke")
    assert [(c["inputs"], c["labels"]) for c in configs] == [("real", "normal"), ("real", "oneclass"), ("random", "normal"), ("random", "oneclass")]
    assert all(c["width"] == 16 and len(c["block"]) == 2 for c in configs) and settings["n_train"] == 1000
    _, _, mnist = _plan(sensitivity, "mnist")
    assert all(c["lr"] == 0.01 and len(c["block"]) == 3 for c in mnist)


def test_capacity_stages():
    _, _, configs = _plan(capacity, "smoke")
    assert len(configs) == 3 * 2
    width = [c for c in configs if c["part"] == "width"]
    assert sorted({u["width"] for c in width for u in configurations(c)}) == [16, 64, 256] and {c["fraction"] for c in width} == {0.0, 0.5, 1.0}
    size = [c for c in configs if c["part"] == "size"]
    assert sorted({u["n_train"] for c in size for u in configurations(c)}) == [125, 250, 500] and {u["width"] for c in size for u in configurations(c)} == {256}
    _, _, paper = _plan(capacity, "paper")
    assert len(paper) == 5 * 2 and max(u["width"] for c in paper for u in configurations(c)) == 8192


def test_bad_settings_fail_before_anything_runs():
    with pytest.raises(GensweepError, match="bad value for fractions: 1.5"):
        resolve_settings(csr.PIPELINE, "smoke", ["fractions=0.5,1.5"])
    with pytest.raises(GensweepError, match="sizes: 800 is more than n_train=500"):
        resolve_settings(capacity.PIPELINE, "smoke", ["sizes=100,800"])
    with pytest.raises(GensweepError, match="bad value for regularizers: 'mixup'"):
        resolve_settings(regularizers.PIPELINE, "smoke", ["regularizers=dropout,mixup"])
    with pytest.raises(GensweepError, match="csr_examples=500 is more than n_val=397"):
        resolve_settings(csr.PIPELINE, "smoke", ["csr_examples=500"])


def write_cifar(directory: Path, n: int = 12) -> None:
    """The six CIFAR-10 python-version batches, small, in the real format."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in mdata.CIFAR10_FILES:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, size=n).tolist()}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("args, message", [
    (["run", "memorization-csr", "--set", "dataset=mnist"], "mnist needs a data directory"),
    (["run", "memorization-capacity", "--set", "n_train=5000"], "lower n_train"),
    (["run", "memorization-csr", "--data-dir", "{cifar}"], "corrupt data file"),
])
def test_cli_one_line_errors(args, message, tmp_path):
    write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_4").write_bytes(b"\x80\x02 not a pickle")
    args = [a.replace("{cifar}", str(tmp_path / "cifar")) for a in args]
    proc = subprocess.run(GENSWEEP + args + ["--results", str(tmp_path / "results")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
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
    write_cifar(tmp_path)  # auto: a directory with CIFAR-10 batches is read as CIFAR-10
    cifar = common.load_data({**settings, "n_train": 0, "n_val": 10}, str(tmp_path))
    assert cifar.train.x.shape == (60, 3, 32, 32) and len(cifar.val) == 10
    (tmp_path / "data_batch_2").write_bytes(b"\x80\x02 not a pickle")  # every file there, one of them corrupt
    with pytest.raises(DataError, match=r"corrupt data file .*data_batch_2"):
        common.load_data(settings, str(tmp_path))


@pytest.mark.parametrize("module, preset", [(csr, "cifar10"), (csr, "cifar10-random"), (regularizers, "paper")])
def test_cifar10_presets_train_the_small_cnn_on_files_in_the_real_format(module, preset, tmp_path):
    write_cifar(tmp_path, n=8)
    settings = resolve_settings(module.PIPELINE, preset, ["n_train=16", "n_val=8", "epochs=2", "batch_size=8"]
                                + (["csr_examples=4", "lass_iters=2"] if module is csr else ["lass_iters=2"]))
    data = module.PIPELINE.load_data(settings, str(tmp_path))
    assert data.train.x.shape == (16, 3, 32, 32) and len(data.val) == 8 and "CIFAR-10" in data.description
    (stage,) = module.PIPELINE.stages(settings)
    config = next(c for c in stage.plan.configs if c.get("regularizer", "adversarial") == "adversarial" and c["noise"] != "real")
    out = []
    RUN[module](config, data, out.append)
    assert [r.step for r in out] == [1, 2] and out[-1].final
    assert out[-1].metrics[0]["train_acc"] >= 0 and ("csr" in out[-1].metrics[0]) == (module is csr)


# ---------------------------------------------------------------------------------- trainables


@pytest.fixture(scope="module")
def tiny() -> tasks.MemData:
    train_set, val_set = load_images("digits", None, n_train=120, n_val=40)
    return tasks.MemData(train_set, val_set)


def test_noise_sets_are_cached(tiny):
    a = tasks.training_set(tiny, "randY", 0.5, 3)
    assert a is tasks.training_set(tiny, "randY", 0.5, 3) and torch.equal(a.x, tiny.train.x) and not torch.equal(a.y, tiny.train.y)
    x = tasks.training_set(tiny, "randX", 1.0, 3, n_train=50)
    assert len(x) == 50 and torch.equal(x.y, tiny.train.y[:50]) and not torch.equal(x.x, tiny.train.x[:50])


def _spy(monkeypatch, name: str, val_at: int, seen: list):
    original = getattr(tasks, name)

    def spy(*args, **kwargs):
        seen.append((args[val_at - 1], args[val_at]))
        return original(*args, **kwargs)

    monkeypatch.setattr(tasks, name, spy)


RUNS = {  # trainable, the core loop it calls, where that loop takes the validation set, a tiny config
    "csr": (tasks.run_csr, "train", 2, dict(width=8, epochs=1, batch_size=40, lr=0.1, seed=0, csr_examples=5, lass_iters=2)),
    "regularizers": (tasks.run_regularizer, "train", 2, dict(width=8, epochs=1, batch_size=40, lr=0.1, seed=0,
                                                             regularizer="adversarial", value=0.5, adv_dropout=0.1, lass_iters=2)),
    "easy": (tasks.run_easy, "train_seeds", 1, dict(width=8, epochs=1, batch_size=40, lr=0.1, block=[{"seed": 0}, {"seed": 1}])),
    "capacity": (tasks.run_capacity, "train_seeds", 1, dict(epochs=1, batch_size=40, lr=0.1, block=[{"width": 8, "n_train": 60, "seed": 0}])),
}


@pytest.mark.parametrize("noise", ["randX", "randY"])
@pytest.mark.parametrize("name", list(RUNS))
def test_noise_reaches_the_training_set_and_never_the_validation_set(name, noise, tiny, monkeypatch):
    run, loop, val_at, config = RUNS[name]
    seen: list = []
    _spy(monkeypatch, loop, val_at, seen)
    run(dict(config, noise=noise, fraction=1.0, data_seed=0), tiny, lambda report: None)
    clean_train, clean_val = load_images("digits", None, n_train=120, n_val=40)  # loaded anew: what the set was before any run
    assert seen
    for train_set, val_set in seen:
        assert torch.equal(val_set.x, clean_val.x) and torch.equal(val_set.y, clean_val.y)
        if noise == "randX":
            assert not torch.equal(train_set.x, clean_train.x[: len(train_set)]) and torch.equal(train_set.y, clean_train.y[: len(train_set)])
        else:
            assert torch.equal(train_set.x, clean_train.x[: len(train_set)]) and not torch.equal(train_set.y, clean_train.y[: len(train_set)])


def test_bits_roundtrip():
    mask = torch.rand(1001, generator=torch.Generator().manual_seed(0)) < 0.3
    assert np.array_equal(tasks.decode_bits(tasks.encode_bits(mask), 1001), mask.numpy())


def test_easy_block_equals_seeds_run_alone(tiny):
    base = dict(noise="real", fraction=1.0, width=16, epochs=1, batch_size=16, lr=0.05, data_seed=0)
    block, alone = [], []
    tasks.run_easy(dict(base, block=[{"seed": 0}, {"seed": 1}, {"seed": 2}]), tiny, block.append)
    for seed in (0, 1, 2):
        tasks.run_easy(dict(base, seed=seed), tiny, alone.append)
    assert block[-1].final and len(block[-1].metrics) == 3
    for i, report in enumerate(alone):
        (single,) = report.metrics
        assert single["wrong_bits"] == block[-1].metrics[i]["wrong_bits"]
        assert single["train_acc"] == pytest.approx(block[-1].metrics[i]["train_acc"], abs=1e-9)
    assert block[-1].metrics[0]["wrong_bits"] != block[-1].metrics[1]["wrong_bits"]


def test_regularizer_adversarial_config_trains_adversarially(tiny, monkeypatch):
    config = dict(noise="real", fraction=1.0, width=16, epochs=2, batch_size=30, lr=0.1, seed=1, regularizer="adversarial",
                  value=0.5, adv_dropout=0.2, lass_iters=3, lass_min_new=0)
    calls = []
    original = tasks.train
    monkeypatch.setattr(tasks, "train", lambda model, *args, **kwargs: calls.append((model, kwargs)) or original(model, *args, **kwargs))
    out = []
    history = tasks.run_regularizer(config, tiny, out.append)
    ((model, kwargs),) = calls
    assert kwargs["adversarial_weight"] == 0.5 and kwargs["lass_iters"] == 3 and kwargs["lass_min_new"] == 0
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    expected = train(mlp(784, 16, 10, dropout=0.2, seed=1), tiny.train, tiny.val, epochs=2, batch_size=30, lr=0.1, seed=1,
                     adversarial_weight=0.5, lass_iters=3, lass_min_new=0)
    assert [r["train_loss"] for r in history] == pytest.approx([r["train_loss"] for r in expected], abs=1e-6)
    assert out[-1].metrics[0]["adv_critical"] == expected[-1]["adv_critical"]


def test_capacity_trains_every_width_for_the_same_budget_equal_to_runs_alone(tiny):
    out = []
    config = dict(noise="randX", fraction=0.5, epochs=20, batch_size=5, lr=0.1, data_seed=0,
                  block=[{"width": w, "n_train": 60, "seed": s} for w in (8, 64) for s in (0, 1)])
    tasks.run_capacity(config, tiny, out.append)
    assert [r.step for r in out] == list(range(1, 21)) and out[-1].final and not any(r.final for r in out[:-1])
    assert all(len(r.metrics) == 4 for r in out)
    train_set = tasks.training_set(tiny, "randX", 0.5, 0, n_train=60)
    for i, configuration in enumerate(configurations(config)):
        alone = train(mlp(784, configuration["width"], 10, seed=configuration["seed"]), train_set, tiny.val, epochs=20, batch_size=5,
                      lr=0.1, seed=configuration["seed"])
        assert [r.metrics[i]["val_acc"] for r in out] == pytest.approx([r["val_acc"] for r in alone], abs=1e-6)
        fit = next((r["epoch"] for r in alone if r["train_acc"] == 1.0), None)
        last = out[-1].metrics[i]
        assert last["fit"] == (fit is not None) and (np.isnan(last["epochs_to_fit"]) if fit is None else last["epochs_to_fit"] == fit)
        assert last["best_val_acc"] == pytest.approx(max(r["val_acc"] for r in alone), abs=1e-6)
        assert last["n_examples"] == 60
    fits = [m["fit"] for m in out[-1].metrics]
    assert any(fits) and not all(fits)  # the wide runs fit early and still train the whole budget, the narrow ones never


@pytest.mark.parametrize("inputs", ["real", "random"])
def test_sensitivity_block_equals_each_seed_alone(inputs, tiny):
    out = []
    config = dict(inputs=inputs, labels="normal", width=4, steps=7, measure_every=2, batch_size=40, lr=0.1, data_seed=3,
                  block=[{"seed": 0}, {"seed": 1}])
    tasks.run_sensitivity(config, tiny, out.append)
    assert [r.step for r in out] == [4, 6, 7] and [r.final for r in out] == [False, False, True]
    images = tiny.train if inputs == "real" else mdata.rand_x(tiny.train, 1.0, 3)[0]  # random inputs: randX, every input
    x, y = images.x.flatten(1), images.y
    for k, seed in enumerate((0, 1)):
        batches = sgd_batches(len(x), 40, 3, stream_seed(seed, "order"))[:7]
        g = unrolled_sensitivity(mlp(784, 4, 10, seed=seed), x, y, batches, 0.1, steps=[4, 6, 7])
        for i, report in enumerate(out):
            assert report.metrics[k]["gini_t"] == pytest.approx(gini(g[i]), abs=1e-5)
            assert report.metrics[k]["gini"] == pytest.approx(gini(g[: i + 1].mean(dim=0)), abs=1e-5)
        by_class = unrolled_sensitivity(mlp(784, 4, 10, seed=seed), x, y, batches, 0.1, steps=[4, 6, 7], classes=10)
        matrix = np.array(json.loads(out[-1].metrics[k]["class_matrix"]))
        assert np.allclose(matrix, per_class_matrix(by_class, y, 10).numpy(), rtol=1e-4, atol=1e-9)
    assert out[0].metrics[0]["class_matrix"] == ""


def test_regularizer_kwargs():
    assert tasks.regularizer_kwargs("adversarial", 0.5, 0.2) == ({"dropout": 0.2}, {"adversarial_weight": 0.5})
    assert tasks.regularizer_kwargs("weight_decay", 0.01) == ({}, {"weight_decay": 0.01})
    assert tasks.regularizer_kwargs("input_noise", 2.0) == ({"input_noise": 2.0}, {})
    with pytest.raises(ValueError):
        tasks.regularizer_kwargs("mixup", 1.0)


# ------------------------------------------------------------------------ reports against their frames

TINY = {
    easy: ["runs=4", "block_size=2", "n_train=100", "n_val=40", "width=16"],
    capacity: ["n_train=80", "n_val=40", "fractions=0,1", "widths=8,32", "sizes=40,80", "size_width=32", "seeds=2", "epochs=8"],
    sensitivity: ["n_train=100", "seeds=2", "steps=8", "measure_every=2", "batch_size=20", "inputs=real,random", "labels=normal"],
    csr: ["n_train=100", "n_val=40", "width=32", "epochs=3", "noises=randY", "fractions=1", "csr_examples=10", "lass_iters=5", "seeds=2"],
    regularizers: ["n_train=100", "n_val=40", "width=32", "epochs=2", "regularizers=dropout,adversarial", "dropout=0.5", "lass_iters=2",
                   "seeds=2"],
}
FIGURES = {easy: ["easy_examples.png"], capacity: ["capacity.png"], sensitivity: ["gini.png", "class_matrix.png"],
           csr: ["csr.png"], regularizers: ["regularizers.png", "curves.png"]}
ROWS = {easy: 12, capacity: 2 * 2 * 4, sensitivity: 4, csr: 4, regularizers: 2 * 3 * 2}
RUN = {easy: tasks.run_easy, capacity: tasks.run_capacity, sensitivity: tasks.run_sensitivity, csr: tasks.run_csr,
       regularizers: tasks.run_regularizer}


def frames_without_ray(module):
    """Trial and curve frames as the sink writes them (one row per configuration: its config and final metrics; curve rows per
    report), the trainables run in-process on the TINY settings."""
    settings = resolve_settings(module.PIPELINE, "smoke", TINY[module])
    (stage,) = module.PIPELINE.stages(settings)
    data = module.PIPELINE.load_data(settings, None)
    trials, curves = [], []
    for config in stage.plan.configs:
        out = []
        RUN[module]({**config, "stage": stage.name}, data, out.append)
        assert out[-1].final and not any(r.final for r in out[:-1])
        for i, configuration in enumerate(configurations(config)):
            key = trial_key(configuration)
            trials.append({**configuration, **out[-1].metrics[i], "trial_key": key, "stage": stage.name})
            curves += [{"trial_key": key, **r.metrics[i]} for r in out]
    return pd.DataFrame(trials), pd.DataFrame(curves)


@pytest.fixture(scope="module")
def frames():
    cache: dict = {}

    def get(module):
        if module not in cache:
            cache[module] = frames_without_ray(module)
        return cache[module]

    return get


def table(markdown: str) -> list[dict]:
    """The rows of the (first) markdown table in ``markdown``, as dicts by column header."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
    header = cells(lines[0])
    return [dict(zip(header, cells(line))) for line in lines[2:]]


def number(text: str) -> float:
    """The (first) number of a cell: ``12.3 ± 0.4`` -> 12.3, ``≥ 8.0 ± 0.0`` -> 8.0."""
    return float(re.search(r"-?\d+(\.\d+)?", text).group())


def spread(text: str) -> float:
    """The ± part of a cell."""
    return float(text.split("±")[1])


def render(module, trial_frame, curve_frame, tmp_path) -> list[dict]:
    markdown = module.PIPELINE.report(trial_frame, curve_frame, str(tmp_path))
    for name in FIGURES[module]:
        assert (tmp_path / name).stat().st_size > 5000, name
    return table(markdown)


def test_csr_report_numbers(frames, tmp_path):
    trials, curves = frames(csr)
    assert len(trials) == ROWS[csr]
    rows = {r["data"]: r for r in render(csr, trials, curves, tmp_path)}
    assert set(rows) == {"real", "randY 1"}
    for (noise, fraction), group in trials.groupby(["noise", "fraction"]):
        row = rows[common.noise_label(noise, fraction)]
        assert number(row["final train acc (%)"]) == pytest.approx(100 * group["train_acc"].mean(), abs=0.051)
        assert spread(row["final train acc (%)"]) == pytest.approx(100 * group["train_acc"].std(ddof=0), abs=0.051)
        assert number(row["final val acc (%)"]) == pytest.approx(100 * group["val_acc"].mean(), abs=0.051)
        peaks = [curves[curves["trial_key"] == key]["val_acc"].max() for key in group["trial_key"]]
        assert number(row["peak val acc (%)"]) == pytest.approx(100 * np.mean(peaks), abs=0.051)
        assert number(row["final CSR"]) == pytest.approx(group["csr"].mean(), abs=0.0005)
        means = [curves[curves["trial_key"] == key]["csr"].mean() for key in group["trial_key"]]
        assert number(row["mean CSR over training"]) == pytest.approx(np.mean(means), abs=0.0005)
        assert int(row["runs"]) == len(group) == 2


def test_capacity_report_numbers_with_censored_runs(frames, tmp_path):
    trials, curves = frames(capacity)
    trials = trials.copy()
    assert len(trials) == ROWS[capacity]
    # make the censoring visible whatever the tiny runs did: one run of each (part, fraction, value) fits at epoch 3,
    # the other never does
    first = ~trials.duplicated(["part", "fraction", "width", "n_train"])
    trials.loc[first, ["fit", "epochs_to_fit"]] = [True, 3.0]
    trials.loc[~first, ["fit", "epochs_to_fit"]] = [False, float("nan")]
    rows = render(capacity, trials, curves, tmp_path)
    budget = int(trials["epochs"].max())
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        column = "width" if row["part"] == "width" else "n_train"
        group = trials[(trials["part"] == row["part"]) & (trials["fraction"] == float(row["randX fraction"]))
                       & (trials[column] == int(row["width / n_train"]))]
        assert len(group) == 2
        assert number(row["best val acc (%)"]) == pytest.approx(100 * group["best_val_acc"].mean(), abs=0.051)
        assert number(row[f"val acc at epoch {budget} (%)"]) == pytest.approx(100 * group["val_acc"].mean(), abs=0.051)
        assert number(row["train acc (%)"]) == pytest.approx(100 * group["train_acc"].mean(), abs=0.051)
        assert row["censored"] == "1/2"
        assert row["epochs to fit"].startswith("≥") and number(row["epochs to fit"]) == pytest.approx((3 + budget) / 2, abs=0.051)


def test_easy_report_numbers(frames, tmp_path):
    trials, curves = frames(easy)
    assert len(trials) == ROWS[easy]
    rows = {r["data"]: r for r in render(easy, trials, curves, tmp_path)}
    for noise, group in trials.groupby("noise"):
        row = rows[noise]
        wrong = np.stack([tasks.decode_bits(bits, 100) for bits in group["wrong_bits"]])
        rate = wrong.mean(axis=0)
        labels = pd.Series(list(group["labels"].iloc[0])).astype(int)
        class_mean = pd.Series(rate).groupby(labels).transform("mean").to_numpy()
        assert int(row["runs"]) == 4
        assert number(row["mean rate"]) == pytest.approx(rate.mean(), abs=0.0005)
        assert number(row["std of rates"]) == pytest.approx(rate.std(), abs=0.0005)
        assert number(row["within-class std"]) == pytest.approx(np.sqrt(((rate - class_mean) ** 2).mean()), abs=0.0005)
        assert number(row["between-class std"]) == pytest.approx(class_mean.std(), abs=0.0005)
        p = pd.Series(rate).groupby(labels).mean()
        binomial = np.sqrt((labels.map(p * (1 - p)) / 4).mean())
        assert number(row["within-class std if Binomial per class"]) == pytest.approx(binomial, abs=0.0005)
        assert number(row["share rate <= 0.1 (easy)"]) == pytest.approx((rate <= 0.1).mean(), abs=0.0005)
        assert number(row["share rate >= 0.9 (hard)"]) == pytest.approx((rate >= 0.9).mean(), abs=0.0005)
        assert number(row["train acc (%)"]) == pytest.approx(100 * group["train_acc"].mean(), abs=0.051)


def test_sensitivity_report_numbers(frames, tmp_path):
    trials, curves = frames(sensitivity)
    assert len(trials) == ROWS[sensitivity]
    rows = render(sensitivity, trials, curves, tmp_path)
    assert len(rows) == 2
    for row in rows:
        group = trials[(trials["inputs"] == row["inputs"]) & (trials["labels"] == row["labels"])]
        assert number(row["Gini of g_bar_x (end)"]) == pytest.approx(group["gini"].mean(), abs=0.0005)
        assert spread(row["Gini of g_bar_x (end)"]) == pytest.approx(group["gini"].std(ddof=0), abs=0.0005)
        assert number(row["Gini of g^t_x (last step)"]) == pytest.approx(group["gini_t"].mean(), abs=0.0005)
        assert int(row["seeds"]) == 2


def test_regularizer_report_numbers(frames, tmp_path):
    trials, curves = frames(regularizers)
    assert len(trials) == ROWS[regularizers]
    trials = trials.copy()  # final below best validation accuracy, by different amounts: the columns must not be mixed up
    trials["val_acc"] = trials["best_val_acc"] - 0.01 * (1 + np.arange(len(trials)) % 5)
    markdown = regularizers.PIPELINE.report(trials, curves, str(tmp_path))
    rows = table(markdown)
    assert len(rows) == 3  # baseline, dropout 0.5, adversarial 0.5 with dropout 0.2
    adversarial = common.curve_columns(trials, curves, ["noise", "regularizer"])
    adversarial = adversarial[(adversarial["regularizer"] == "adversarial") & (adversarial["noise"] == "randY")]["adv_critical"]
    assert f"found {100 * adversarial.mean():.2f}% of the randY training examples critical per epoch" in markdown
    names = {v: k for k, v in regularizers.NAMES.items()} | {"none": "none"}
    for row in rows:
        reg = names[row["regularizer"]]
        mine = trials[(trials["regularizer"] == reg) & (trials["value"] == number(row["value"]))]
        rand, real = mine[mine["noise"] == "randY"], mine[mine["noise"] == "real"]
        assert len(rand) == len(real) == 2 and int(row["seeds"]) == 2
        assert number(row["randY final train acc (%)"]) == pytest.approx(100 * rand["train_acc"].mean(), abs=0.051)
        assert spread(row["randY final train acc (%)"]) == pytest.approx(100 * rand["train_acc"].std(), abs=0.051)
        assert number(row["real best val acc (%)"]) == pytest.approx(100 * real["best_val_acc"].mean(), abs=0.051)
        assert number(row["real final val acc (%)"]) == pytest.approx(100 * real["val_acc"].mean(), abs=0.051)
        best = [curves[curves["trial_key"] == key]["val_acc"].max() for key in real["trial_key"]]
        assert real["best_val_acc"].tolist() == pytest.approx(best)


# ---------------------------------------------------------------------- end to end (real runner)


@pytest.mark.e2e
@pytest.mark.parametrize("module", [easy, sensitivity, regularizers], ids=lambda m: m.PIPELINE.name)
def test_tiny_run_end_to_end(module, ray_session, tmp_path):
    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.store import ResultStore

    overrides = TINY[module] + (["seeds=1"] if module is regularizers else [])
    settings = resolve_settings(module.PIPELINE, "smoke", overrides)
    total = ROWS[module] // (2 if module is regularizers else 1)
    summary = run_sweep(Sweep(module.PIPELINE, "smoke", settings, str(tmp_path), quiet=True, num_cpus=2))
    assert summary.complete and summary.failed == 0 and summary.total == total
    store = ResultStore.open(str(tmp_path))
    trials = store.read("trials", module.PIPELINE.name)
    curves = store.read("curves", module.PIPELINE.name)
    assert len(trials) == total and trials["trial_key"].is_unique and not curves.empty
    if module is easy:
        assert trials.groupby("noise")["seed"].apply(sorted).to_dict() == {n: [0, 1, 2, 3] for n in ("real", "randX", "randY")}
        assert all(len(tasks.decode_bits(t, 100)) == 100 for t in trials["wrong_bits"])
        assert all(len(t) == 100 and t.isdigit() for t in trials["labels"])
    out = tmp_path / "report"
    out.mkdir()
    rows = render(module, trials, curves, out)
    assert rows
