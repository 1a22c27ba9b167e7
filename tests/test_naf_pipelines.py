"""naf pipelines: stages per preset, fixed reference values, bad settings, the trainables' metrics, reports."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import GENSWEEP, ROOT, expand, rows
from core.data import DataError
from core.flows import model as flow
from core.flows.spec import FlowSpec
from core.naf import hparams
from core.naf import metrics
from pipelines.engine.spec import GensweepError, resolve_settings
from pipelines.naf import sinewave, tabular, toy
from tasks import naf as tasks
from tasks.report import configurations


# ------------------------------------------------------------------------------------------- stages


def test_toy_presets():
    smoke = expand(toy.PIPELINE, "smoke")
    assert len(smoke) == 8 and len(rows(smoke)) == 16  # 4 targets x 2 transformers, 2-seed blocks
    cpu = expand(toy.PIPELINE, "cpu")
    assert len(rows(cpu)) == (7 * 4 + 4) * 3  # + N1's deep affine on the 4 energies
    u1 = [c for c in cpu if c["target"] == "U1" and c["transformer"] == "dsf"][0]
    e = hparams.TOY_ENERGY
    assert (u1["task"], u1["flows"], u1["hidden"], u1["hidden_layers"], u1["ds_dim"], u1["ds_layers"], u1["lr"], u1["steps"], u1["batch"]) == \
        ("energy", 1, 64, 3, 5, 2, 5e-4, 10_000, 64) == ("energy", e["flows"], e["hidden"], e["hidden_layers"], e["ds_dim"], e["ds_layers"], e["lr"], e["steps"], e["batch"])
    assert (u1["flip"], u1["final_linear"], u1["context"], u1["clip"]) == (False, False, 1, 0.0)  # model_iaf_toy.py's one IAF_DSF
    assert tasks.clip_of(u1) is None and tasks.spec_of(u1, 2).context == 1
    deep = [c for c in cpu if c["target"] == "U1" and c["flows"] == 3]
    assert len(deep) == 1 and deep[0]["transformer"] == "affine-gated" and deep[0]["hidden"] == 128 and deep[0]["hidden_layers"] == 2
    mog = [c for c in cpu if c["target"] == "mog4" and c["transformer"] == "ddsf"][0]
    assert (mog["task"], mog["flows"], mog["hidden_layers"], mog["ds_dim"], mog["lr"], mog["steps"]) == ("density", 2, 2, 16, 5e-3, 2_000)
    assert mog["base_log_var"] == 1.0 and tasks.spec_of(mog, 2).base_log_var == 1.0 and tasks.clip_of(mog) == 5.0
    assert sorted(c["seed"] for c in rows([mog])) == [0, 1, 2]


def test_toy_random_order_groups_seeds_by_their_draw_and_keeps_ids():
    """energy_order=random (N1's fixed_order=False): each energy block's seeds share the order they drew (``order`` in
    the config, read into FlowSpec.order); densities keep the natural order; the default adds no key (ids unchanged)."""
    from core.flows.made import random_order

    assert all("order" not in c for c in expand(toy.PIPELINE, "cpu"))
    out = expand(toy.PIPELINE, "smoke", ["energy_order=random", "seeds=6", "block_size=2"])
    energy = [c for c in out if c["task"] == "energy"]
    assert all("order" not in c for c in out if c["task"] == "density")
    for target, transformer in {(c["target"], c["transformer"]) for c in energy}:
        blocks = [c for c in energy if (c["target"], c["transformer"]) == (target, transformer)]
        assert sorted(r["seed"] for r in rows(blocks)) == list(range(6)) and all(len(c["block"]) <= 2 for c in blocks)
        for c in blocks:
            assert {random_order(2, r["seed"]) for r in configurations(c)} == {tuple(c["order"])}
            assert tasks.spec_of(c, 2).order == tuple(c["order"])
    assert {tuple(c["order"]) for c in energy} == {(0, 1), (1, 0)}


def test_toy_random_order_block_equals_runs_alone():
    """A reversed-order energy block: seed 1 of a block of two equals seed 1 alone, and differs from the natural order."""
    cfg = dict(task="energy", target="U1", transformer="dsf", flows=1, hidden=8, hidden_layers=1, ds_dim=4, ds_layers=1, lr=5e-3,
               steps=20, batch=16, clip=0.0, eval_every=10, eval_samples=2000, flip=False, final_linear=False, context=1)
    both = tasks.run_toy({**cfg, "order": [1, 0], "block": [{"seed": 0}, {"seed": 1}]}, lambda r: None)
    alone = tasks.run_toy({**cfg, "order": [1, 0], "block": [{"seed": 1}]}, lambda r: None)
    natural = tasks.run_toy({**cfg, "block": [{"seed": 1}]}, lambda r: None)
    assert both[1]["kl_nats"] == pytest.approx(alone[0]["kl_nats"], abs=1e-5)
    assert abs(natural[0]["kl_nats"] - alone[0]["kl_nats"]) > 1e-4


def test_sinewave_and_tabular_presets():
    smoke = expand(sinewave.PIPELINE, "smoke")
    assert len(rows(smoke)) == 4 and {c["transformer"] for c in smoke} == {"maf", "dsf"}
    cpu = expand(sinewave.PIPELINE, "cpu")
    assert len(rows(cpu)) == 2 * 2 * 5 and {(c["steps"], c["batch"], c["lr"], c["ds_dim"]) for c in cpu} == {(20_000, 320, 0.01, 24)}
    assert {(c["final_linear"], tasks.clip_of(c)) for c in cpu} == {(False, None)} and not tasks.spec_of(cpu[0], 1).final_linear
    t_smoke = expand(tabular.PIPELINE, "smoke")
    assert len(t_smoke) == 2 + 2 and len(rows(t_smoke)) == 6 and {c["flows"] for c in t_smoke} == {2}
    t_cpu = expand(tabular.PIPELINE, "cpu")
    assert len(t_cpu) == 8 + 2 * 3 and len(rows(t_cpu)) == 24 + 6
    library = [c for c in t_cpu if c["transformer"] == tasks.LIBRARY_MAF]  # the anchor: one seed per trial, every dataset
    assert {len(c["block"]) for c in library} == {1} and sorted(c["dataset"] for c in library) == ["digits63"] * 3 + ["mixture6"] * 3
    n = hparams.NAF_TABULAR
    assert {(c["hidden"], c["lr"], c["batch"], c["patience"], c["ds_dim"], c["clip"]) for c in t_cpu} == \
        {(n["hidden"], n["lr"], n["batch"], n["patience"], n["ds_dim"], n["clip"])}
    paper = expand(tabular.PIPELINE, "paper")
    maf_power = [c for c in paper if c["transformer"] in ("maf", tasks.LIBRARY_MAF) and c["dataset"] == "hepmass"]
    assert {c["hidden"] for c in maf_power} == {512} and {(c["transformer"], c["flows"]) for c in maf_power} == \
        {("maf", 5), ("maf", 10), (tasks.LIBRARY_MAF, 5), (tasks.LIBRARY_MAF, 10)}


BAD = {
    "unknown target": (toy.PIPELINE, ["targets=U1,U99"], "bad value for targets: 'U99'"),
    "unknown transformer": (toy.PIPELINE, ["transformers=dsf,realnvp"], "bad value for transformers: 'realnvp'"),
    "zero flows": (toy.PIPELINE, ["energy_flows=0"], "bad value for energy_flows: 0 (must be >= 1)"),
    "negative clip": (toy.PIPELINE, ["density_clip=-1"], "bad value for density_clip: -1.0 (must be >= 0)"),
    "zero ds_dim": (toy.PIPELINE, ["density_ds_dim=0"], "bad value for density_ds_dim: 0 (must be >= 1)"),
    "toy hidden below dim": (toy.PIPELINE, ["density_hidden=1"], "bad value for density_hidden: 1 (must be >= 2)"),
    "sinewave zero flows": (sinewave.PIPELINE, ["flows=1,0"], "bad value for flows: 0 (must be >= 1)"),
    "unknown dataset": (tabular.PIPELINE, ["datasets=mixture6,cifar"], "bad value for datasets: 'cifar'"),
    "tabular hidden below dim": (tabular.PIPELINE, ["datasets=digits63", "hidden=32"], "bad value for hidden: 32 (must be >= the data dimension 63 of digits63)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_settings(case):
    pipeline, overrides, message = BAD[case]
    with pytest.raises(GensweepError) as err:
        resolve_settings(pipeline, "smoke", overrides)
    assert message in str(err.value)


def test_missing_maf_archive_is_a_data_error(tmp_path):
    settings = resolve_settings(tabular.PIPELINE, "paper", [])
    with pytest.raises(DataError, match="gensweep download maf-uci"):
        tabular.PIPELINE.load_data(settings, str(tmp_path))


CLI = {
    "unknown target": (["run", "naf-toy", "--set", "targets=U0"], "bad value for targets: 'U0'"),
    "zero flows": (["run", "naf-tabular", "--set", "flows=0"], "bad value for flows: 0 (must be >= 1)"),
    "hidden below dim": (["run", "naf-tabular", "--preset", "cpu", "--set", "hidden=8"], "must be >= the data dimension"),
    "missing maf archive": (["run", "naf-tabular", "--preset", "paper", "--data-dir", "nowhere"], "no MAF data under nowhere"),
}


@pytest.mark.parametrize("case", list(CLI))
def test_cli_one_error_line_before_ray(case, tmp_path):
    import os

    args, message = CLI[case]
    proc = subprocess.run(GENSWEEP + args, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gensweep: error: ") and message in lines[0], proc.stderr


# ------------------------------------------------------------------------------------------- metrics


def test_reverse_kl_of_a_gaussian_q():
    """At init the maf flow is ~ the identity: q = N(0, I); U = -|z - mu|^2 / 2, log Z = log 2 pi: KL = |mu|^2 / 2."""
    spec = FlowSpec(dim=2, transformer="maf", flows=1, hidden=8)
    params = flow.init_block(spec, [0, 1], dtype=torch.float64)
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    u = lambda z: -0.5 * ((z - mu) ** 2).sum(-1)
    out = metrics.energy_metrics(spec, params, u, math.log(2 * math.pi), [0, 1], 40_000, 4.0)
    for row in out:
        assert row["kl_nats"] == pytest.approx(0.5 * float((mu ** 2).sum()), abs=0.01)
        assert metrics.decode_grid(row["heat"]).sum() == pytest.approx(1.0, abs=0.02)


def test_forward_kl_on_mog4_of_a_gaussian_q():
    """forward KL = E_p[log p - log q] with q = N(0, I) (init): checked against a direct Monte Carlo."""
    from core.naf import data as nd

    spec = FlowSpec(dim=2, transformer="maf", flows=1, hidden=8)
    params = flow.init_block(spec, [0], dtype=torch.float64)
    out = metrics.density_metrics(spec, params, "mog4", 40_000)[0]
    x = nd.toy_sample("mog4", 200_000, 5).astype(np.float64)
    direct = np.mean(nd.toy_log_prob("mog4", x) + 0.5 * (x ** 2).sum(1) + math.log(2 * math.pi))
    assert out["kl_nats"] == pytest.approx(direct, rel=0.02) and out["kl_nats"] > 5
    assert out["test_nll_nats"] == pytest.approx(out["kl_nats"] + 4.118, abs=0.1)  # + mog4's entropy


def test_toy_block_equals_runs_alone():
    cfg = dict(task="density", target="mog4", transformer="dsf", flows=1, hidden=8, hidden_layers=1, ds_dim=4, ds_layers=1,
               lr=5e-3, steps=20, batch=16, clip=5.0, eval_every=10, eval_samples=2000)
    both = tasks.run_toy({**cfg, "block": [{"seed": 0}, {"seed": 1}]}, lambda r: None)
    alone = tasks.run_toy({**cfg, "block": [{"seed": 1}]}, lambda r: None)
    assert both[1]["test_nll_nats"] == pytest.approx(alone[0]["test_nll_nats"], abs=1e-4)


def test_sinewave_trainable_reports_masses():
    reports = []
    cfg = dict(transformer="dsf", flows=1, hidden=4, hidden_layers=1, ds_dim=8, ds_layers=1, lr=0.01, steps=30, batch=64,
               clip=5.0, eval_every=10, block=[{"seed": 0}])
    out = tasks.sinewave_run(cfg, reports.append)[0]
    assert reports[-1].final and not reports[0].final and [r.step for r in reports] == [10, 20, 30]
    masses = [out[k] for k in sinewave.MODE_KEYS] + [out["mass_near_0"]]
    assert all(0 <= m <= 1 for m in masses) and sum(masses) <= 1 + 1e-6 and math.isfinite(out["kl_nats"]) and out["kl_nats"] > 0
    assert metrics.decode_grid(out["hist"], 1).sum() == pytest.approx(1.0, abs=0.01)


def test_tabular_trainable_best_checkpoint_and_gap():
    from core.naf import data as nd

    data = nd.load_mixture6(600, 200, 300)
    cfg = dict(dataset="mixture6", transformer="maf", flows=1, hidden=12, hidden_layers=1, ds_dim=4, ds_layers=1, lr=1e-2, batch=100,
               max_epochs=4, patience=30, polyak=0.0, clip=5.0, block=[{"seed": 0}, {"seed": 1}])
    reports = []
    out = tasks.tabular_run(cfg, data, reports.append)
    assert [r.step for r in reports] == [1, 2, 3, 4, 4] and reports[-1].final
    for row in out:
        assert row["entropy_gap_nats"] == pytest.approx(row["true_test_ll_nats"] - row["test_ll_nats"])
        assert 1 <= row["epochs_to_best"] <= 4 and row["test_ll_2se"] > 0
        assert row["val_nll_best"] == pytest.approx(min(reports[i].metrics[out.index(row)]["val_nll"] for i in range(4)))


def _library_config(**kw) -> dict:
    return dict(dict(dataset="mixture6", transformer=tasks.LIBRARY_MAF, flows=2, hidden=16, hidden_layers=1, lr=3e-2, batch=50,
                     max_epochs=8, patience=30, clip=5.0, block=[{"seed": 0}]), **kw)


def test_library_anchor_keeps_the_best_validation_checkpoint():
    """zuko's MAF on data whose test split is its validation split: the row's test LL is minus the best validation NLL,
    not the last epoch's (a large lr makes the validation NLL move both ways)."""
    pytest.importorskip("zuko")
    from core.naf import data as nd

    base = nd.load_mixture6(400, 200, 10)
    data = nd.Tabular("mixture6-val-as-test", base.train, base.val, base.val.copy(), "test")
    reports = []
    (row,) = tasks.tabular_run(_library_config(lr=0.1, max_epochs=6), data, reports.append)
    val = [r.metrics[0]["val_nll"] for r in reports if not r.final]
    assert len(val) == 6 and int(np.argmin(val)) != len(val) - 1  # the last epoch is not the best
    assert row["val_nll_best"] == pytest.approx(min(val)) and row["epochs_to_best"] == 1 + int(np.argmin(val))
    assert row["test_ll_nats"] == pytest.approx(-min(val), abs=1e-4) and reports[-1].final


def test_library_anchor_stops_after_patience_epochs_without_improvement():
    pytest.importorskip("zuko")
    from core.naf import data as nd

    data = nd.load_mixture6(400, 200, 100)
    (row,) = tasks.tabular_run(_library_config(lr=0.3, max_epochs=40, patience=2), data, lambda r: None)
    assert row["epochs_run"] < 40 and row["epochs_run"] == row["epochs_to_best"] + 2 + 1  # maf_experiments' impatient rule


def test_library_anchor_reads_each_seeds_own_data_order(monkeypatch):
    pytest.importorskip("zuko")
    from core.naf import data as nd

    order = tasks.tabular_minibatches(400, 50, [2, 5])
    alone = tasks.tabular_minibatches(400, 50, [5])
    assert all(torch.equal(order(step)[1], alone(step)[0]) for step in range(20))  # a seed's order is its own in any block
    seen = []
    real = tasks.tabular_minibatches
    monkeypatch.setattr(tasks, "tabular_minibatches", lambda n, b, seeds: seen.append(list(seeds)) or real(n, b, seeds))
    data = nd.load_mixture6(400, 100, 100)
    first = tasks.tabular_run(_library_config(max_epochs=1, block=[{"seed": 5}]), data, lambda r: None)
    again = tasks.tabular_run(_library_config(max_epochs=1, block=[{"seed": 5}]), data, lambda r: None)
    assert seen == [[5], [5]] and first[0]["test_ll_nats"] == again[0]["test_ll_nats"]


def test_library_anchor_needs_the_flows_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zuko" else real(name, *a))
    with pytest.raises(GensweepError, match=r"transformer zuko-maf needs the 'flows' extra \(zuko not installed\)"):
        resolve_settings(tabular.PIPELINE, "smoke", [])
    resolve_settings(tabular.PIPELINE, "smoke", ["transformers=maf,dsf"])  # without the anchor: fine


# ------------------------------------------------------------------------------------------- reports


def fake_toy_frame() -> pd.DataFrame:
    recs = []
    heat = metrics.encode_grid(np.full((metrics.HEAT_BINS, metrics.HEAT_BINS), 1 / metrics.HEAT_BINS ** 2))
    for target, kls in (("U1", {"dsf": [0.02, 0.03, 0.04], "affine-gated": [1.0, 1.1, 1.2]}),
                        ("mog4", {"dsf": [0.5, 0.6, 0.7], "affine-gated": [0.55, 0.65, 0.75]})):
        for transformer, values in kls.items():
            for seed, kl in enumerate(values):
                recs.append(dict(target=target, transformer=transformer, flows=1, hidden=64, seed=seed, kl_nats=kl, wall_s=1.0,
                                 test_nll_nats=kl + 4.1 if target == "mog4" else float("nan"), heat=heat))
    return pd.DataFrame(recs)


def test_toy_report_table_checks_and_figure(tmp_path):
    text = toy.report(fake_toy_frame(), None, str(tmp_path))
    assert "| U1 | DSF | 1 | 64 | reverse KL | 0.030 ± 0.006 |" in text
    assert "- U1: DSF KL 0.030 vs affine-gated 1.100: lower by 1.070 nats, seed ranges apart → yes" in text
    assert "- U1: DSF reverse KL ≤ 0.05: mean 0.030 → yes; every seed (max 0.040) → yes" in text
    assert "- mog4: DSF KL 0.600 vs affine-gated 0.650: lower by 0.050 nats, seed ranges overlap → no" in text
    assert (tmp_path / "naf_toy_heatmaps.png").stat().st_size > 1000


def test_sinewave_and_tabular_reports(tmp_path):
    hist = metrics.encode_grid(np.full((1, metrics.SINE_HIST_BINS), 0.01))
    frame = pd.DataFrame([dict(transformer=t, flows=1, seed=s, kl_nats=0.1, hist=hist, mass_near_0=0.1,
                               **dict(zip(sinewave.MODE_KEYS, (0.3, 0.3, 0.3) if t == "dsf" else (0.95, 0.0, 0.0))))
                          for t in ("dsf", "maf") for s in range(5)])
    text = sinewave.report(frame, None, str(tmp_path))
    assert "| true posterior |  | 0 | 0.277 | 0.277 | 0.277 | 0.138 |" in text
    assert "in 5/5 seeds → yes" in text and "- maf ×1: ≥ 90 % on one mode (0.6/1.2/1.8 or f < 0.1) in 5/5 seeds" in text
    assert (tmp_path / "naf_sinewave.png").exists()
    tab = pd.DataFrame([dict(dataset="power", transformer="ddsf", flows=5, hidden=100, seed=s, test_ll_nats=0.5 + 0.01 * s,
                             test_ll_2se=0.01, entropy_gap_nats=float("nan"), epochs_to_best=10.0, wall_s=5.0) for s in range(3)])
    text = tabular.report(tab, None, str(tmp_path))
    assert "| power | DDSF | 5 | 100 | 0.510 ± 0.006 |" in text and "0.62 ± 0.01 [V]" in text
    assert "| NAF DDSF (5) | V | 0.62 ± 0.01 | 11.91 ± 0.13 | -15.09 ± 0.40 | -8.86 ± 0.15 | 157.73 ± 0.04 |" in text
    assert "| FFJORD | V | 0.46 |" in text and "| B-NAF | R |" in text and "library anchor" not in text
    anchor = tab.assign(transformer=tasks.LIBRARY_MAF, test_ll_nats=0.3)
    text = tabular.report(pd.concat([tab, anchor]), None, str(tmp_path))
    assert "| power | MAF (zuko, library anchor) | 5 | 100 | 0.300 ± 0.000 |" in text and "zuko's `MAF` (core.naf.library" in text


def test_tabular_curves_one_panel_per_dataset_with_a_diverged_flow(tmp_path):
    frame = pd.DataFrame([dict(trial_key=f"{d}-{t}", dataset=d, transformer=t, flows=5) for d in ("mixture6", "digits63")
                          for t in ("dsf", "maf")])
    curves = pd.DataFrame([dict(trial_key=k, step=e, val_nll=(float("nan") if k == "mixture6-maf" and e > 2 else 10 + 5 / e))
                           for k in frame["trial_key"] for e in range(1, 31)])
    tabular.curves_figure(frame, curves, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_mode_coverage_counts_modes_with_half_their_mass():
    truth = metrics.truth_grid("mog4")
    assert metrics.mode_coverage("mog4", truth, truth) == 1.0
    points, _ = metrics.grid_points(metrics.toy_box("mog4"))
    one = truth * ((((points - np.array([0.0, 5.0])) ** 2).sum(1) <= 2.5 ** 2).reshape(truth.shape))
    assert metrics.mode_coverage("mog4", one / one.sum(), truth) == 0.25
    u4 = metrics.truth_grid("U4")
    assert metrics.mode_coverage("U4", u4, u4) == 1.0 and metrics.mode_coverage("grid10", metrics.truth_grid("grid10"), metrics.truth_grid("grid10")) == 1.0


def test_epoch_minibatches_cover_each_epoch_once_and_redraw_per_model():
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]
    batches = tasks.epoch_minibatches(10, 3, gens(0, 1))  # 3 batches of 3 per epoch (the last example sits out)
    epochs = [torch.cat([batches(step) for step in range(e * 3, e * 3 + 3)], dim=1) for e in range(2)]
    for epoch in epochs:
        assert epoch.shape == (2, 9) and all(len(set(row.tolist())) == 9 for row in epoch)  # no example twice in an epoch
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation every epoch
    alone = tasks.epoch_minibatches(10, 3, gens(1))
    assert torch.equal(torch.cat([alone(step) for step in range(6)], 1), torch.cat([e[1:] for e in epochs], 1))  # block-invariant
