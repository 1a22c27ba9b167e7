"""bhn pipelines: stages per preset, the reference's fixed values, bad settings refused in one line, the trainables'
rows on tiny synthetic data, ECE and the curve summaries by hand, reports on synthetic rows; one e2e sweep each."""
from __future__ import annotations

import json
import math
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import GENSWEEP, ROOT, expand, rows
from core.bhn import calibration
from pipelines.bhn import active, classify, common, ood, toy
from pipelines.engine.spec import GensweepError, resolve_settings
from tasks import bhn as tasks


# ------------------------------------------------------------------------------------------- stages


def test_toy_presets():
    smoke = expand(toy.PIPELINE, "smoke")
    assert len(smoke) == 4 and len(rows(smoke)) == 8  # 2 problems x {mean-field, realnvp x4}, 2-seed blocks
    assert {(c["posterior"], c["coupling"]) for c in smoke} == {("mean-field", 0), ("realnvp", 4)} and {c["steps"] for c in smoke} == {2000}
    cpu = expand(toy.PIPELINE, "cpu")
    assert len(rows(cpu)) == 2 * 6 * 5 and {c["steps"] for c in cpu} == {10_000}
    assert sorted(r["seed"] for r in rows(cpu) if r["problem"] == "product" and r["posterior"] == "dsf") == [0, 1, 2, 3, 4]
    assert {c["coupling"] for c in cpu if c["posterior"] in ("map", "linear", "mean-field")} == {0}
    paper = expand(toy.PIPELINE, "paper")
    assert {(c["posterior"], c["coupling"]) for c in paper if c["posterior"] == "iaf"} == {("iaf", 4), ("iaf", 8)}


def test_classify_presets():
    smoke = expand(classify.PIPELINE, "smoke")
    assert len(smoke) == 8  # {map, mcdropout, bhn mean-field, bhn realnvp x4} x sizes {500, 2000}, 1 seed
    assert {common.variant_label(c) for c in smoke} == {"map", "mcdropout", "bhn mean-field", "bhn realnvp ×4"}
    assert {(c["hidden"][0], c["batch"], c["valid_samples"], c["epochs"]) for c in smoke} == {(200, 32, 20, 10)}  # experiment_MLP_WN
    cpu = expand(classify.PIPELINE, "cpu")
    assert len(cpu) == 5 * 3 * 3 and {c["labels"] for c in cpu} == {100, 1000, 7000}
    assert {(c["n_train"], c["n_valid"], c["n_test"]) for c in cpu} == {(7000, 1000, 2000)}
    assert {(c["epochs"], c["lr"]) for c in cpu} == {(100, 1e-3)}  # a point of launch_IAF_MNIST_MLP's grid, half its epochs
    paper = expand(classify.PIPELINE, "paper")
    assert {c["lr"] for c in paper} == {1e-4} and {c["test_samples"] for c in paper} == {200} and max(c["labels"] for c in paper) == 50_000
    assert {c["coupling"] for c in paper if c["posterior"] == "realnvp"} == {4, 8}
    assert len([c for c in paper if c["posterior"] == "mean-field"]) == 7 * 3  # once per (size, seed), not per coupling
    assert {c["coupling"] for c in paper if c["posterior"] == "mean-field"} == {0}


def test_ood_presets_and_blocks():
    smoke = expand(ood.PIPELINE, "smoke")
    assert len(smoke) == 2  # map and bhn realnvp x4, one seed: a trial each, the evaluations as its block
    by_model = {c["model"]: c for c in smoke}
    m, b = rows([by_model["map"]]), rows([by_model["bhn"]])
    assert {r["score"] for r in m} == {"max_prob", "entropy"}  # map's samples are copies: no BALD / mean std
    assert {r["score"] for r in b} == {"max_prob", "entropy", "bald", "mean_std"}
    assert len(b) == 3 * 4 + 4 + 3 * 4 and len(m) == 3 * 2 + 2 + 3 * 2  # OOD sets + errors + FGS per eps
    assert {(r["ood_set"], r.get("eps")) for r in b if r["ood_set"] == "fgs"} == {("fgs", 0.05), ("fgs", 0.1), ("fgs", 0.2)}
    c = by_model["bhn"]
    assert (c["hidden"], c["activation"], c["lr"], c["batch"], c["exclude"], c["l2"]) == ([256, 256, 256], "gelu", 1e-3, 128, 3, 1e-5)
    cpu = expand(ood.PIPELINE, "cpu")
    assert len(cpu) == 4 * 3 and {c["epochs"] for c in cpu} == {30} and {c["mc_samples"] for c in cpu} == {100}
    assert {r["ood_set"] for r in rows(cpu)} == {*ood.CPU_SETS, "errors", "fgs"}
    paper = expand(ood.PIPELINE, "paper")
    assert {"omniglot", "notmnist", "cifar10bw"} <= {r["ood_set"] for r in rows(paper)} and "ensemble" in {c["model"] for c in paper}


def test_active_presets():
    smoke = expand(active.PIPELINE, "smoke")
    assert len(smoke) == 4 and {(c["model"], c["acquisition"]) for c in smoke} == {(m, a) for m in ("bhn", "mcdropout") for a in ("bald", "random")}
    assert {(c["steps"], c["acquire"], c["subset"], c["mc_samples"], c["image_size"], c["initial_per_class"]) for c in smoke} == {(5, 10, 500, 20, 14, 2)}
    cpu = expand(active.PIPELINE, "cpu")
    assert len(cpu) == (2 * 4 + 3) * 3  # map has no BALD
    assert {c["acquisition"] for c in cpu if c["model"] == "map"} == {"max_ent", "var_ratio", "random"}
    assert {(c["steps"], c["subset"], c["mc_samples"], c["epochs"], c["batch"], c["lr"], c["pool"]) for c in cpu} == {(48, 2000, 50, 50, 128, 1e-3, "remove")}
    assert {(c["steps"], c["mc_samples"], c["arch"]) for c in expand(active.PIPELINE, "paper")} == {(98, 100, "cnn")}  # dk_AL's hyperCNN
    assert "arch" not in cpu[0] and "arch" not in smoke[0]  # the default stays out of the configs (recorded trial keys)


BAD = {
    "unknown model": (classify.PIPELINE, ["models=map,bnn"], "bad value for models: 'bnn'"),
    "unknown posterior": (ood.PIPELINE, ["posteriors=realnvp,maf"], "bad value for posteriors: 'maf'"),
    "unknown toy posterior": (toy.PIPELINE, ["posteriors=hmc"], "bad value for posteriors: 'hmc'"),
    "unknown score": (ood.PIPELINE, ["scores=max_prob,odin"], "bad value for scores: 'odin'"),
    "unknown acquisition": (active.PIPELINE, ["acquisitions=bald,coreset"], "bad value for acquisitions: 'coreset'"),
    "unknown OOD set": (ood.PIPELINE, ["ood_sets=uniform,svhn"], "bad value for ood_sets: 'svhn'"),
    "negative coupling": (classify.PIPELINE, ["coupling=4,-1"], "bad value for coupling: -1 (must be >= 0)"),
    "negative toy coupling": (toy.PIPELINE, ["coupling=-2"], "bad value for coupling: -2 (must be >= 0)"),
    "zero MC samples (ood)": (ood.PIPELINE, ["mc_samples=0"], "bad value for mc_samples: 0 (must be >= 1)"),
    "zero MC samples (classify)": (classify.PIPELINE, ["test_samples=0"], "bad value for test_samples: 0 (must be >= 1)"),
    "zero MC samples (active)": (active.PIPELINE, ["mc_samples=0"], "bad value for mc_samples: 0 (must be >= 1)"),
    "acquisition larger than the subset": (active.PIPELINE, ["acquire=600"], "bad value for acquire: 600 (larger than the pool"),
    "acquisition larger than the pool": (active.PIPELINE, ["acquire=300", "subset=5000", "candidates=7800", "steps=1"],
                                         "bad value for acquire: 300 (larger than the pool: scored subset 5000, pool 200)"),
    "pool exhausted under remove": (active.PIPELINE, ["steps=700"], "bad value for subset: 500 (larger than the pool of"),
    "held-out class 10": (ood.PIPELINE, ["exclude=10"], "bad value for exclude: 10 (must be <= 9)"),
    "held-out class -1": (ood.PIPELINE, ["exclude=-1"], "bad value for exclude: -1 (must be >= 0)"),
    "size above the training part": (classify.PIPELINE, ["labels=500,9000"], "bad value for labels: 9000 (larger than the training part"),
    "FGS images above the test set": (ood.PIPELINE, ["fgs_images=5000"], "bad value for fgs_images: 5000 (more than the test images"),
    "unknown toy problem": (toy.PIPELINE, ["problems=product,xor"], "bad value for problems: 'xor'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_settings(case):
    pipeline, overrides, message = BAD[case]
    with pytest.raises(GensweepError) as err:
        resolve_settings(pipeline, "smoke", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_reference_pool_semantics_keeps_the_pool_for_the_subset_check():
    resolve_settings(active.PIPELINE, "smoke", ["steps=700", "pool=reference"])  # the pool never shrinks: fine


CLI = {
    "unknown model": (["run", "bhn-classify", "--set", "models=bnn"], "bad value for models: 'bnn'"),
    "acquisition larger than the pool": (["run", "bhn-active", "--set", "acquire=501"], "bad value for acquire: 501"),
    "held-out class": (["run", "bhn-ood", "--set", "exclude=12"], "bad value for exclude: 12 (must be <= 9)"),
}


@pytest.mark.parametrize("case", list(CLI))
def test_cli_one_error_line_before_ray(case, tmp_path):
    args, message = CLI[case]
    proc = subprocess.run(GENSWEEP + args + ["--results", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gensweep: error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()  # nothing started


# ------------------------------------------------------------------------------------------- metrics by hand


def test_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 1])
    # 15 bins: 0.9 -> bin 13 (acc 1), 0.8 -> bin 11 (acc 0), 0.7 -> bin 10 (acc 1), 0.55 -> bin 8 (acc 1)
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.55)) / 4
    assert calibration.ece(probs, labels) == pytest.approx(expected)
    # two points in one bin: |mean acc - mean confidence|, weighted by the bin's share
    same = calibration.ece(torch.tensor([[0.9, 0.1], [0.91, 0.09]]), torch.tensor([0, 1]))
    assert same == pytest.approx(abs(0.5 - 0.905))
    assert calibration.ece(probs, labels, bins=1) == pytest.approx(abs(0.75 - (0.9 + 0.8 + 0.7 + 0.55) / 4))
    assert calibration.nll(probs, labels) == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.7, 0.55])))


def test_ece_bin_edges_are_closed_on_the_right():
    """With 4 bins a confidence of exactly 0.75 sits in (0.5, 0.75] with 0.625, not in (0.75, 1] (Guo et al.'s bins)."""
    probs = torch.tensor([[0.75, 0.25, 0.0], [0.625, 0.375, 0.0]])
    assert calibration.ece(probs, torch.tensor([0, 1]), bins=4) == pytest.approx(abs(0.5 - 0.6875))  # apart: 0.4375
    assert calibration.ece(torch.tensor([[0.5, 0.25, 0.25]]), torch.tensor([0]), bins=4) == pytest.approx(0.5)


def test_curve_summary_by_hand():
    curve = [(20, 0.5), (60, 0.8), (100, 0.85), (300, 0.91), (500, 0.96), (520, 0.97)]
    out = tasks.curve_summary(curve)
    assert out["mean_acc_100_500"] == pytest.approx((0.85 + 0.91 + 0.96) / 3)
    assert out["auc"] == pytest.approx(np.mean([c[1] for c in curve]))
    assert (out["labels_to_90"], out["labels_to_95"]) == (300.0, 500.0)
    assert math.isnan(tasks.curve_summary([(20, 0.5), (30, 0.6)])["labels_to_90"])


# ------------------------------------------------------------------------------------------- trainables on tiny data


@pytest.fixture(scope="module")
def blobs() -> tasks.Images:
    """1,000 images of 10 classes, each a bright 7x7 block at its own place plus noise: learnable in a few steps."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1000)
    x = rng.random((1000, 28, 28), dtype=np.float32) * 0.3
    for i, c in enumerate(y):
        r, col = divmod(int(c), 4)
        x[i, 7 * r:7 * r + 7, 7 * col:7 * col + 7] += 0.7
    return tasks.Images("blobs", x.reshape(1000, 784).clip(0, 1), y.astype(np.int64), "synthetic blobs")


def tiny(pipeline, preset_overrides: list[str]) -> dict:
    return resolve_settings(pipeline, "smoke", preset_overrides)


def test_classify_run_rows(blobs, one_thread):
    settings = tiny(classify.PIPELINE, ["labels=200", "hidden=16", "epochs=3", "n_train=400", "n_valid=100", "n_test=200",
                                        "test_samples=4", "valid_samples=2", "models=bhn", "posteriors=realnvp", "coupling=2",
                                        "flow_hidden=8"])
    (config,) = classify.configs(settings)
    reports = []
    row = tasks.classify_run(config, blobs, reports.append)
    assert [r.step for r in reports] == [1, 2, 3, 3] and reports[-1].final and not reports[0].final
    assert row["test_err"] == pytest.approx(100 * (1 - row["test_acc"])) and row["test_acc"] > 0.3
    assert 0 <= row["ece"] <= 1 and row["test_nll"] > 0 and 0 <= row["best_epoch"] <= 2 and math.isfinite(row["train_kl"])


def test_classify_uses_the_first_n_training_images(blobs, one_thread, monkeypatch):
    seen = {}
    real = tasks.train_model

    def spy(config, spec, x, y, *args, **kwargs):
        seen["n"], seen["shape"] = len(x), tuple(x.shape[1:])
        return real(config, spec, x, y, *args, **kwargs)

    monkeypatch.setattr(tasks, "train_model", spy)
    settings = tiny(classify.PIPELINE, ["labels=50", "hidden=8", "epochs=1", "n_train=400", "n_valid=50", "n_test=100",
                                        "test_samples=2", "models=map"])
    tasks.classify_run(classify.configs(settings)[0], blobs, lambda r: None)
    assert seen == {"n": 50, "shape": (28, 28)}


def test_ood_run_rows(blobs, one_thread):
    settings = tiny(ood.PIPELINE, ["models=mcdropout", "hidden=16", "epochs=2", "n_train=500", "n_valid=100", "n_test=300",
                                   "mc_samples=4", "valid_samples=2", "fgs_images=40", "fgs_eps=0.1,0.3", "fgs_attack_samples=2",
                                   "fgs_eval_samples=3", "ood_sets=heldout,uniform,inverted"])
    (config,) = ood.configs(settings)
    out = tasks.ood_run(config, blobs, lambda r: None)
    assert len(out) == len(config["block"]) == 3 * 4 + 4 + 2 * 4
    for entry, row in zip(config["block"], out):
        assert {"test_acc", "test_nll", "ece"} <= set(row)
        if entry["ood_set"] == "fgs":
            assert 0 <= row["adv_acc"] <= 1 and 0 <= row["auroc"] <= 100
        else:
            assert 0 <= row["auroc"] <= 100 and 0 <= row["aupr_in"] <= 100 and 0 <= row["aupr_out"] <= 100
    for eps in (0.1, 0.3):  # one attack per ε: every score's row has its accuracy
        assert len({r["adv_acc"] for e, r in zip(config["block"], out) if e.get("eps") == eps}) == 1


def test_ood_rows_score_the_in_distribution_set_as_positive(blobs, one_thread, monkeypatch):
    """With the test set predicted confidently and every OOD set flat, max prob separates them perfectly: AUROC and
    AUPR-in 100 (in-distribution positive); entropy too; each row gets its own OOD set's numbers."""
    real = tasks.predict

    def fake(model, x, samples, seed):
        probs = real(model, x, samples, seed)
        if seed % 7_919 == 1:  # the in-distribution test set (ood_run's first call): one class at 0.91
            return torch.nn.functional.one_hot(torch.arange(len(x)) % probs.shape[-1], probs.shape[-1]).float().expand_as(probs) * 0.9 + 0.01
        return torch.softmax(torch.randn_like(probs) * 0.01, -1)  # an OOD set: nearly flat

    monkeypatch.setattr(tasks, "predict", fake)
    settings = tiny(ood.PIPELINE, ["models=mcdropout", "hidden=8", "epochs=1", "n_train=300", "n_valid=50", "n_test=100",
                                   "mc_samples=3", "valid_samples=1", "fgs=false", "errors=false", "ood_sets=heldout,uniform"])
    (config,) = ood.configs(settings)
    out = tasks.ood_run(config, blobs, lambda r: None)
    for entry, row in zip(config["block"], out):
        if entry["score"] in ("max_prob", "entropy"):
            assert (row["auroc"], row["aupr_in"], row["aupr_out"]) == pytest.approx((100.0, 100.0, 100.0)), entry


def test_active_run_remove_never_reacquires(blobs, one_thread):
    settings = tiny(active.PIPELINE, ["models=mcdropout", "acquisitions=bald", "steps=3", "acquire=5", "subset=40", "mc_samples=3",
                                      "epochs=2", "n_train=600", "n_test=200", "candidates=100", "test_samples=2", "hidden=8"])
    (config,) = active.configs(settings)
    reports = []
    row = tasks.active_run(config, blobs, reports.append)
    curve = json.loads(row["curve"])
    assert [n for n, _ in curve] == [20, 25, 30, 35] and [r.step for r in reports] == [20, 25, 30, 35] and reports[-1].final
    assert row["unique_labels"] == row["labels"] == 35 and row["pool_left"] == 500 - 15
    assert math.isnan(row["mean_acc_100_500"]) and row["auc"] == pytest.approx(np.mean([a for _, a in curve]))


@pytest.mark.parametrize("reset", ["none", "random"])
def test_active_run_warm_start_keeps_one_adam(blobs, one_thread, monkeypatch, reset):
    """params_reset none: every fit continues one Adam (its step count runs on over the acquisitions, as the reference's
    compiled train_func keeps its Adam state); random: a fresh model and a fresh Adam per acquisition. Every epoch
    trains on ceil(N / batch) minibatches (dk_AL.py's train_model keeps the partial one)."""
    real, seen = tasks.btrain.fit, []

    def spy(model, spec, x, *args, optimizer=None, **kwargs):
        before = sum(int(s["step"]) for s in optimizer.state.values()) if optimizer is not None else None
        result = real(model, spec, x, *args, optimizer=optimizer, **kwargs)
        seen.append((optimizer, before, sum(h["steps"] for h in result.history)))
        assert [h["steps"] for h in result.history] == [math.ceil(len(x) / 8)] * 2  # dk_AL keeps the partial batch
        return result

    monkeypatch.setattr(tasks.btrain, "fit", spy)
    settings = tiny(active.PIPELINE, ["models=bhn", "posteriors=realnvp", "acquisitions=random", "steps=2", "acquire=5",
                                      "subset=40", "mc_samples=2", "epochs=2", "n_train=600", "n_test=200", "candidates=100",
                                      "test_samples=2", "hidden=8", "batch=8", f"params_reset={reset}"])
    tasks.active_run(active.configs(settings)[0], blobs, lambda r: None)
    optimizers = [o for o, _, _ in seen]
    assert len(seen) == 3 and all(o is not None for o in optimizers)
    if reset == "none":
        assert all(o is optimizers[0] for o in optimizers)
        done = 0
        for _, before, steps in seen:
            assert before == done * len(optimizers[0].state)  # every parameter's Adam step count carried over
            done += steps
        state = optimizers[0].state
        assert len(state) > 0 and sum(int(s["step"]) for s in state.values()) == done * len(state)
    else:
        assert len({id(o) for o in optimizers}) == 3 and all(before == 0 for _, before, _ in seen)


def test_active_run_cnn_trains_the_reference_net(blobs, one_thread, monkeypatch):
    """arch=cnn reaches the model: the loop trains dk_AL's CNN (3 convs, 2 dense layers of scales)."""
    real, archs = tasks.btrain.fit, []

    def spy(model, spec, *args, **kwargs):
        archs.append([s.kind for s in model.nets[0].shapes])
        return real(model, spec, *args, **kwargs)

    monkeypatch.setattr(tasks.btrain, "fit", spy)
    settings = tiny(active.PIPELINE, ["models=mcdropout", "acquisitions=bald", "steps=1", "acquire=5", "subset=40", "mc_samples=2",
                                      "epochs=1", "n_train=600", "n_test=200", "candidates=100", "test_samples=2", "arch=cnn"])
    row = tasks.active_run(active.configs(settings)[0], blobs, lambda r: None)
    assert archs == [["conv"] * 3 + ["dense"] * 2] * 2 and row["labels"] == 25


def test_active_run_reference_pool_grows(blobs, one_thread):
    settings = tiny(active.PIPELINE, ["models=map", "acquisitions=random", "steps=2", "acquire=5", "subset=40", "epochs=1",
                                      "n_train=600", "n_test=200", "candidates=100", "test_samples=1", "hidden=8", "pool=reference"])
    row = tasks.active_run(active.configs(settings)[0], blobs, lambda r: None)
    assert row["pool_left"] == 500 + 2 * 40 and row["labels"] == 30


def test_map_var_ratio_is_one_minus_max_softmax(blobs):
    spec = tasks.spec_of(dict(model="map", hidden=[8], activation="relu"), 10)
    from core.bhn import models as bm

    model = bm.init_model(spec, torch.as_tensor(blobs.x[:64]).view(-1, 28, 28), 0)
    x = tasks.as_images(blobs.x[:30], 28)
    values = tasks.active_values_fn(model, x, "var_ratio", 3, torch.Generator().manual_seed(0))(np.arange(30))
    with torch.no_grad():
        expected = 1 - torch.softmax(bm.logits(model, x, 1)[0], -1).max(-1).values
    assert torch.allclose(torch.as_tensor(values).float(), expected, atol=1e-6) and float(values.std()) > 0


def test_as_images_pools_to_14():
    x = np.arange(784, dtype=np.float32).reshape(1, 784) / 784
    out = tasks.as_images(x, 14)
    assert out.shape == (1, 14, 14) and out[0, 0, 0] == pytest.approx(float(x[0, [0, 1, 28, 29]].mean()))


def test_toy_run_rows(one_thread):
    cfg = dict(problem="product", posterior="mean-field", coupling=0, steps=30, lr=1e-2, samples=8, flow_hidden=8, eval_samples=500,
               block=[{"seed": 0}, {"seed": 1}])
    reports = []
    out = tasks.toy_run(cfg, reports.append)
    assert len(out) == 2 and len(reports) == 1 and reports[0].final
    from core.naf.metrics import decode_grid

    for row in out:
        hist = decode_grid(row["hist"], tasks.TOY_BINS)
        assert hist.shape == (64, 64) and hist.sum() == pytest.approx(1.0, abs=0.02)  # 20,000 draws, float16 cells
        assert row["one_branch"] == float(min(row["p_a_pos"], 1 - row["p_a_pos"]) < 0.05) and math.isfinite(row["kl"])
    lin = tasks.toy_run(dict(cfg, problem="linear", block=[{"seed": 0}]), lambda r: None)[0]
    assert {"mean_err", "cov_err"} <= set(lin) and "hist" not in lin


def test_toy_histogram_rows_are_a():
    theta = np.array([[1.0, -3.0]] * 10)
    hist = tasks.toy_histogram(theta)
    i, j = np.unravel_index(hist.argmax(), hist.shape)
    assert hist.sum() == 1.0 and i == int((1.0 + 4) / 8 * 64) and j == int((-3.0 + 4) / 8 * 64)


# ------------------------------------------------------------------------------------------- reports


def classify_frame() -> pd.DataFrame:
    recs = []
    for model, posterior, coupling, err, nll in (("map", "-", 0, 10.0, 0.50), ("mcdropout", "-", 0, 8.0, 0.30),
                                                 ("bhn", "realnvp", 4, 8.2, 0.40)):
        for n in (100, 1000):
            for seed in range(3):
                e = err * (2 if n == 100 else 1) + 0.1 * seed
                recs.append(dict(model=model, posterior=posterior, coupling=coupling, labels=n, seed=seed, test_err=e,
                                 test_acc=1 - e / 100, test_nll=nll + 0.01 * seed, ece=0.05, best_epoch=3.0))
    return pd.DataFrame(recs)


def test_classify_report(tmp_path):
    text = classify.report(classify_frame(), None, str(tmp_path))
    assert "| map | 100 | 20.10 ± 0.06 | 0.510 ± 0.006 | 0.050 ± 0.000 | 3.0 | 3 | published: not entered |" in text
    assert "- bhn realnvp ×4: test NLL below map's at every size: n=100 0.410 vs 0.510, n=1000 0.410 vs 0.510 → yes" in text
    assert "- bhn realnvp ×4: test error ≤ map's at the smallest sizes: n=100 16.50 vs 20.10 %, n=1000 8.30 vs 10.10 % → yes" in text
    assert "- bhn realnvp ×4: test error within 0.5 points of mcdropout's at n=1000: 8.30 vs 8.10 % → yes" in text
    assert text.index("| map |") < text.index("| mcdropout |") < text.index("| bhn realnvp ×4 |")
    assert (tmp_path / "bhn_classify_sizes.png").stat().st_size > 1000


def ood_frame() -> pd.DataFrame:
    recs = []
    for model, posterior, coupling, base in (("map", "-", 0, 80.0), ("mcdropout", "-", 0, 82.0), ("bhn", "realnvp", 4, 85.0)):
        scores = ["max_prob", "entropy"] if model == "map" else ["max_prob", "entropy", "bald"]
        for seed in range(2):
            clean = dict(model=model, posterior=posterior, coupling=coupling, seed=seed, test_acc=0.97, test_nll=0.1, ece=0.01)
            for o, shift in (("uniform", 17.0), ("gaussian", 8.0), ("heldout", 0.0), ("inverted", 5.0), ("errors", 10.0)):
                for k, s in enumerate(scores):
                    auroc = base + shift + k + seed
                    recs.append(dict(clean, ood_set=o, score=s, auroc=auroc, aupr_in=auroc + 1, aupr_out=auroc - 1))
            for eps, acc in ((0.1, 0.5 if model != "bhn" else 0.6), (0.2, 0.2)):
                for s in scores:
                    recs.append(dict(clean, ood_set="fgs", eps=eps, score=s, adv_acc=acc, auroc=70.0, err_auroc=60.0))
    return pd.DataFrame(recs)


def test_ood_report(tmp_path):
    text = ood.report(ood_frame(), None, str(tmp_path))
    assert "| uniform | 97.50 ± 0.50 | 98.50 ± 0.50 | 96.50 ± 0.50 | 97.89 | 98.63 | 96.06 | [V] |" in text
    assert "| errors | 90.50 ± 0.50 | 91.50 ± 0.50 | 89.50 ± 0.50 | 97.83 |" in text
    assert "- map / max prob vs uniform: AUROC 97.50 vs H&G 97.89 [V]: 0.39 points → yes" in text
    assert "- map / max prob vs gaussian: AUROC 88.50 vs H&G 88.29 [V]: 0.21 points → yes" in text
    assert "- bhn realnvp ×4: best score ≥ map / max prob on 4 of 4 OOD sets" in text
    assert "- bhn realnvp ×4: FGS accuracy at ε = 0.1 60.0 % vs mcdropout 50.0 % → at or above" in text
    assert "| heldout | bhn realnvp ×4 | 85.5 ± 0.5 | 86.5 ± 0.5 | 87.5 ± 0.5 | published: not entered |" in text
    assert (tmp_path / "bhn_ood_auroc.png").exists() and (tmp_path / "bhn_ood_fgs.png").exists()


def active_frame() -> pd.DataFrame:
    recs = []
    for model, posterior, coupling in (("mcdropout", "-", 0), ("bhn", "realnvp", 4), ("bhn", "iaf", 4)):
        for acq, lift in (("bald", 0.03 if posterior == "iaf" else 0.05), ("random", 0.0)):
            for seed in range(3):
                spread = 0.07 * (seed - 1) if posterior == "iaf" and acq == "random" else 0.001 * seed  # iaf: a wide random band
                curve = [[n, min(0.99, 0.5 + n / 1000 + lift + spread)] for n in range(20, 521, 100)]
                s = tasks.curve_summary([tuple(c) for c in curve])
                recs.append(dict(model=model, posterior=posterior, coupling=coupling, acquisition=acq, seed=seed, pool="remove",
                                 params_reset="none", curve=json.dumps(curve), labels=520.0, test_acc=curve[-1][1], **s))
    return pd.DataFrame(recs)


def test_active_report(tmp_path):
    text = active.report(active_frame(), None, str(tmp_path))
    # points at 120-420 labels: 0.5 + n / 1000 (+ 0.05 for BALD) + 0.001 seed → 77.10 and 82.10
    assert "- mcdropout: BALD 82.10 ± 0.06 vs random 77.10 ± 0.06 (mean accuracy over 100-500 labels): +5.00 points, bands apart → yes" in text
    assert "- bhn realnvp ×4 BALD vs mcdropout BALD: +0.00 points → within 1 point" in text
    assert "- bhn iaf ×4: BALD 80.10 ± 0.06 vs random 77.00 ± 4.04 (mean accuracy over 100-500 labels): +3.10 points, bands overlap → no" in text
    assert "| bhn realnvp ×4 | bald | 99.00 ± 0.00 | 520 |" in text
    assert (tmp_path / "bhn_active_curves.png").stat().st_size > 1000


def toy_frame() -> pd.DataFrame:
    from core.naf.metrics import encode_grid

    hist = encode_grid(np.full((64, 64), 1 / 64 ** 2))
    recs = []
    for seed in range(5):
        recs.append(dict(problem="product", posterior="mean-field", coupling=0, seed=seed, p_a_pos=1.0, kl=0.8, elbo=-150.0,
                         one_branch=1.0, both_branches=0.0, hist=hist, wall_s=1.0))
        recs.append(dict(problem="product", posterior="dsf", coupling=4, seed=seed, p_a_pos=0.5 if seed else 0.1, kl=0.2, elbo=-149.0,
                         one_branch=0.0, both_branches=1.0 if seed else 0.0, hist=hist, wall_s=1.0))
        recs.append(dict(problem="product", posterior="realnvp", coupling=4, seed=seed, p_a_pos=0.5 if seed < 2 else 0.0, kl=0.3,
                         elbo=-149.5, one_branch=float(seed >= 2), both_branches=float(seed < 2), hist=hist, wall_s=1.0))
        # iaf: both branches in 5/5, one seed with a heavy tail (its KL far above mean-field's, and the mean with it)
        recs.append(dict(problem="product", posterior="iaf", coupling=4, seed=seed, p_a_pos=0.5, kl=5000.0 if seed == 3 else 0.1,
                         elbo=-149.0, one_branch=0.0, both_branches=1.0, hist=hist, wall_s=1.0))
        # realnvp ×8: both branches in 5/5, but KL below mean-field's on 3 seeds only (mean below mean-field's)
        recs.append(dict(problem="product", posterior="realnvp", coupling=8, seed=seed, p_a_pos=0.5, kl=0.1 if seed < 3 else 0.9,
                         elbo=-149.0, one_branch=0.0, both_branches=1.0, hist=hist, wall_s=1.0))
        recs.append(dict(problem="linear", posterior="linear", coupling=0, seed=seed, mean_err=0.01, cov_err=0.04 + 0.01 * (seed == 4),
                         wall_s=1.0))
    return pd.DataFrame(recs)


def test_toy_report(tmp_path):
    text = toy.report(toy_frame(), None, str(tmp_path))
    assert "- product, mean-field: one branch (P(a > 0) < 0.05 or > 0.95) in 5/5 seeds" in text
    assert ("- product, dsf ×4: both branches (0.3 ≤ P(a > 0) ≤ 0.7) in 4/5 seeds, both with KL below mean-field's on the "
            "same seed in 4/5; KL 0.200 ± 0.000 (median 0.200) → yes") in text
    realnvp4 = text.split("- product, realnvp ×4")[1].split("\n")[0]  # KL below mean-field's in 5/5, both branches in 2/5
    assert "in 2/5 seeds, both with KL below mean-field's on the same seed in 2/5;" in realnvp4 and realnvp4.endswith("→ no")
    # per seed, not in the mean: one heavy-tailed seed leaves 4/5; a mean below mean-field's does not make 3/5 pass
    assert "- product, iaf ×4: both branches (0.3 ≤ P(a > 0) ≤ 0.7) in 5/5 seeds, both with KL below mean-field's on the same seed in 4/5;" in text
    assert "(median 0.100) → yes" in text.split("- product, iaf ×4")[1].split("\n")[0]
    realnvp8 = text.split("- product, realnvp ×8")[1].split("\n")[0]
    assert "in 5/5 seeds, both with KL below mean-field's on the same seed in 3/5;" in realnvp8 and realnvp8.endswith("→ no")
    assert "- linear, linear: worst seed mean error 1.0 %, covariance error 5.0 % → within 5 %" in text
    assert "| product | dsf ×4 | 0.420 ± 0.080 | 0 / 4 |" in text
    assert (tmp_path / "bhn_toy_product.png").stat().st_size > 1000


# ------------------------------------------------------------------------------------------- e2e

TINY = {
    toy: (["steps=40", "eval_samples=500", "seeds=1"], 4),
    classify: (["labels=100", "epochs=1", "test_samples=2", "hidden=16", "models=map,bhn", "posteriors=mean-field"], 2),
    active: (["steps=1", "epochs=2", "subset=50", "mc_samples=2", "test_samples=2", "hidden=16", "models=mcdropout"], 2),
    ood: (["epochs=1", "hidden=16", "mc_samples=2", "fgs_images=20", "fgs_eps=0.1", "models=map", "n_train=2000"], 3 * 2 + 2 + 2),
}


@pytest.mark.e2e
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.PIPELINE.name)
def test_tiny_sweep_and_report(module, ray_session, tmp_path):
    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.store import ResultStore

    overrides, total = TINY[module]
    settings = resolve_settings(module.PIPELINE, "smoke", overrides)
    summary = run_sweep(Sweep(module.PIPELINE, "smoke", settings, str(tmp_path), quiet=True, num_cpus=2))
    assert summary.complete and summary.failed == 0 and summary.total == total
    trials = ResultStore.open(str(tmp_path)).read("trials", module.PIPELINE.name)
    assert len(trials) == total and trials["trial_key"].is_unique and trials["seed"].notna().all()
    named = {toy: ("problem", "posterior", "kl"), classify: ("model", "posterior", "labels", "test_nll", "ece"),
             active: ("model", "acquisition", "labels", "test_acc"), ood: ("model", "ood_set", "score", "auroc", "aupr_out")}[module]
    assert set(named) <= set(trials.columns)
    out = tmp_path / "report"
    out.mkdir()
    assert "|" in module.PIPELINE.report(trials, None, str(out))


@pytest.mark.parametrize("module", [classify, active, ood], ids=lambda m: m.PIPELINE.name)
def test_paper_data_missing_is_one_data_error_line(module, tmp_path):
    from core.data import DataError

    settings = resolve_settings(module.PIPELINE, "paper", [])
    for where in (str(tmp_path / "nowhere"), str(tmp_path)):
        with pytest.raises(DataError) as err:
            module.PIPELINE.load_data(settings, where)
        assert "\n" not in str(err.value)


def test_too_few_images_for_the_split_is_a_data_error(monkeypatch):
    from core.bhn import data as bdata
    from core.data import DataError

    monkeypatch.setattr(bdata, "load_images", lambda data_dir: (np.zeros((500, 784), np.float32), np.zeros(500, np.int64)))
    with pytest.raises(DataError, match="500 images, the split needs 10,000"):
        tasks.load_images(resolve_settings(classify.PIPELINE, "smoke", []), None)
