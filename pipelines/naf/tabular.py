"""NAF's UCI table (N5; docs bayes.md §d.3): test log-likelihood of MAF, affine-gated, DSF and DDSF flows.

Varies: dataset (offline: ``mixture6`` with exact log-density, ``digits63``; paper: MAF's POWER, GAS, HEPMASS,
MINIBOONE, BSDS300 from --data-dir, ``gensweep download maf-uci DIR``), transformer, flows, seed.
Fixed (N5, NAF maf_experiments.py): MADE 100 × 1 (ELU), ds_dim 16, Adam 1e-4, batch 100, clip 5, validation NLL
every epoch, patience 30 epochs, ≤ 400 epochs; ``maf_widths`` gives ``maf`` rows MAF's per-dataset MADE widths.
Metric: ``test_ll_nats`` = mean test log-likelihood of the best-validation checkpoint (± s.e. over seeds and ± 2 s.e.
over test points, both labelled); ``entropy_gap_nats`` on mixture6 (true minus model log-likelihood on the same
test points, a forward KL).
Report: our table, the published UCI table of NAF / MAF (and §e's anchors) with their evidence tags, learning curves.
"""
from __future__ import annotations


import importlib.util

import numpy as np

from core.flows.spec import TRANSFORMERS
from core.naf import data as ndata
from core.naf import hparams
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from pipelines.naf import common
from tasks.naf import LIBRARY_MAF, tabular_trainable

N = hparams.NAF_TABULAR
DIMS = {"mixture6": ndata.MIXTURE6_DIM, "digits63": 63, **hparams.MAF_DIMS}

SETTINGS = {
    "datasets": Setting(["mixture6"], "data sets (offline: mixture6, digits63; MAF's five need --data-dir)", choices=ndata.TABULAR),
    "transformers": Setting(["maf", "dsf", LIBRARY_MAF], "transformers (affine-gated = NAF code's IAF, maf = MAF's; "
                            f"{LIBRARY_MAF} = the library anchor, zuko's MAF, one seed per trial; extra 'flows')",
                            choices=(*TRANSFORMERS, LIBRARY_MAF)),
    "flows": Setting([2], "flows (list; NAF's table: 5 and 10)", ge=1, item=int),
    "seeds": Setting(2, "seeds per (dataset, transformer, flows)", ge=1),
    "block_size": Setting(5, "seeds trained together in one trial", ge=1),
    "hidden": Setting(N["hidden"], "MADE width (N5: 100; must be >= the data dimension)", ge=1),
    "hidden_layers": Setting(N["hidden_layers"], "MADE hidden layers (N5: 1)", ge=1),
    "ds_dim": Setting(N["ds_dim"], "DSF/DDSF units (N5: 16)", ge=1),
    "ds_layers": Setting(N["ds_layers"], "DSF/DDSF blocks (N5: 1)", ge=1),
    "lr": Setting(N["lr"], "Adam learning rate (N5: 1e-4)", gt=0),
    "batch": Setting(N["batch"], "minibatch (N5: 100)", ge=1),
    "max_epochs": Setting(N["max_epochs"], "epochs at most (N5: 400)", ge=1),
    "patience": Setting(N["patience"], "epochs without a better validation NLL before a configuration stops (N5: 30)", ge=1),
    "polyak": Setting(N["polyak"], "Polyak decay (0: none, N5's default)", ge=0, le=0.99999),
    "clip": Setting(N["clip"], "per-model gradient-norm clip (N5: 5)", gt=0),
    "mixture6_train": Setting(ndata.MIXTURE6_SPLITS[0], "mixture6 training points (validation 5k, test 20k)", ge=100),
    "maf_widths": Setting(False, "maf rows on MAF's sets use MAF's per-dataset MADE widths (100 / 512)"),
    "base_log_var": Setting(N["base_log_var"], "log-variance of the N(0, e^v I) base (maf_experiments: 1.0)"),
}
PRESETS = {
    "smoke": dict(hidden=64, max_epochs=20, mixture6_train=5_000),
    "cpu": dict(datasets=["mixture6", "digits63"], transformers=["maf", "affine-gated", "dsf", "ddsf", LIBRARY_MAF], flows=[5],
                seeds=3, max_epochs=200),
    "paper": dict(datasets=list(hparams.UCI_DATASETS), transformers=["maf", "dsf", "ddsf", LIBRARY_MAF], flows=[5, 10], seeds=5,
                  maf_widths=True),
}
PRESET_HELP = {
    "smoke": "mixture6 with 5k training points, {maf, dsf, zuko-maf}, 2 flows, MADE 64, 20 epochs, 2 seeds: runs, no claim",
    "cpu": "mixture6 (50k) + digits63, 4 transformers + zuko's MAF, 5 flows, 3 seeds, <= 200 epochs (N5: 400), patience 30",
    "paper": "MAF's five sets (--data-dir), {maf, dsf, ddsf, zuko-maf} x {5, 10} flows, 5 seeds, N5's defaults: GPU-days",
}


def check(settings: dict) -> None:
    for name in settings["datasets"]:
        common.check_hidden(settings["hidden"], DIMS[name], name)
    if LIBRARY_MAF in settings["transformers"] and importlib.util.find_spec("zuko") is None:
        raise GensweepError(f"transformer {LIBRARY_MAF} needs the 'flows' extra (zuko not installed): pip install "
                            f"'gensweep[flows]', or leave it out: --set transformers=maf,dsf")


def configs(settings: dict) -> list[dict]:
    keys = ("hidden_layers", "ds_dim", "ds_layers", "lr", "batch", "max_epochs", "patience", "polyak", "clip", "base_log_var")
    shared = []
    for name in settings["datasets"]:
        for transformer in settings["transformers"]:
            hidden = settings["hidden"]
            if transformer in ("maf", LIBRARY_MAF) and settings["maf_widths"] and name in hparams.MAF_HIDDEN:
                hidden = hparams.MAF_HIDDEN[name]
            for flows in settings["flows"]:
                shared.append(dict({k: settings[k] for k in keys}, dataset=name, transformer=transformer, flows=flows, hidden=hidden))
    ours = [c for c in shared if c["transformer"] != LIBRARY_MAF]
    library = [c for c in shared if c["transformer"] == LIBRARY_MAF]  # one model per trial: no block to share
    return common.block_configs(ours, settings["seeds"], settings["block_size"]) + common.block_configs(library, settings["seeds"], 1)


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['dataset']} {c['transformer']} x{c['flows']} seed={c['seed']}"
    return [Stage("fits", tabular_trainable, Grid(configs(settings)), metric="test_ll_nats", mode="max", label=label)]


def load_data(settings: dict, data_dir: str | None) -> ndata.TabularSets:
    """Each named set (MAF's from --data-dir: a missing or corrupt archive is one DataError line)."""
    return ndata.TabularSets({name: ndata.load_tabular(name, data_dir, n_train=settings["mixture6_train"]) for name in settings["datasets"]})


# ------------------------------------------------------------------------------------------- report


def published_table() -> str:
    """a.1's table (test log-likelihood, nats) with §e's anchors, and their evidence tags."""
    rows = [[name, hparams.UCI_TAG, *(f"{m:.2f} ± {s:.2f}" for m, s in (vals[d] for d in hparams.UCI_DATASETS))]
            for name, vals in hparams.UCI_PUBLISHED.items()]
    for name, (tag, vals) in hparams.UCI_ANCHORS.items():
        rows.append([name, tag, *(f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "") for m, s in (vals[d] for d in hparams.UCI_DATASETS))])
    return reports.markdown_table(["published model", "tag", *hparams.UCI_DATASETS], rows)


def curves_figure(frame, curves, path: str) -> None:
    """Validation NLL per epoch, mean over seeds: one panel per dataset, one line per flow; the y range from the best
    value to the worst one at epoch 10 (the first epochs and a diverged flow would flatten the rest); mixture6's
    true entropy dashed."""
    names = {r.trial_key: (r.dataset, f"{common.DISPLAY.get(r.transformer, r.transformer)} ×{int(r.flows)}") for r in frame.itertuples()}
    curves = curves[curves["val_nll"].notna() & curves["trial_key"].isin(names)]
    if "step" not in curves:  # one curve row per evaluation (epoch), in order
        curves = curves.assign(step=curves.groupby("trial_key").cumcount() + 1)
    curves = curves.assign(dataset=curves["trial_key"].map(lambda k: names[k][0]), flow=curves["trial_key"].map(lambda k: names[k][1]))
    datasets = sorted(set(curves["dataset"]))
    if not datasets:
        return
    fig, axes = reports.figure(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        part = curves[curves["dataset"] == name]
        finite = []
        for flow, g in part.groupby("flow"):
            series = g.groupby("step")["val_nll"].mean()
            series = series[np.isfinite(series.to_numpy())]
            ax.plot(series.index, series.values, label=flow)
            finite.append(series)
        values = [v for s_ in finite for v in s_.to_numpy()]
        if values:
            top = max([s_[s_.index >= 10].iloc[0] for s_ in finite if (s_.index >= 10).any()] or [max(values)])
            low = min(values)
            if name == "mixture6":
                h = ndata.mixture6_entropy()[0]
                ax.axhline(h, ls="--", color="k", lw=0.8, label=f"true entropy {h:.3f}")
                low = min(low, h)
            ax.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation NLL (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("validation NLL per epoch (mean over seeds)")
    reports.save_figure(fig, path)


def report(frame, curves, out_dir: str) -> str:
    rows = []
    for (name, transformer, flows, hidden), g in frame.groupby(["dataset", "transformer", "flows", "hidden"], sort=True):
        published = "–"
        if name in hparams.UCI_DATASETS:
            key = {"ddsf": "NAF DDSF", "maf": "MAF"}.get(transformer)
            value = hparams.UCI_PUBLISHED.get(f"{key} ({int(flows)})", {}).get(name) if key else None
            published = f"{value[0]:.2f} ± {value[1]:.2f} [{hparams.UCI_TAG}]" if value else "–"
        gap = common.cell(list(g["entropy_gap_nats"])) if g["entropy_gap_nats"].notna().any() else "–"
        rows.append([name, common.DISPLAY.get(transformer, transformer), int(flows), int(hidden), common.cell(list(g["test_ll_nats"])),
                     f"± {g['test_ll_2se'].mean():.3f}", gap, f"{g['epochs_to_best'].mean():.0f}", f"{g['wall_s'].mean():.0f}", len(g),
                     int(g["test_nonfinite"].sum()) if "test_nonfinite" in g else "–", published])
    table = reports.markdown_table(["data", "transformer", "flows", "hidden", "test LL (nats) ± s.e. over seeds",
                                    "± 2 s.e. over test points", "gap to truth (nats)", "epochs to best", "block wall (s)",
                                    "seeds", "non-finite test points", "published"], rows)
    truth = ""
    if "mixture6" in set(frame["dataset"]):
        h, se = ndata.mixture6_entropy()
        truth = (f"\nmixture6's true entropy: {h:.4f} nats (Monte Carlo over {ndata.MIXTURE6_ENTROPY_SAMPLES:,} samples, s.e. {se:.4f}): "
                 f"a perfect model's expected test LL is {-h:.3f}; the gap column is true minus model LL on the same test points.\n")
    if curves is not None and len(curves) and "val_nll" in curves and "trial_key" in curves:
        curves_figure(frame, curves, f"{out_dir}/naf_tabular_curves.png")
        truth += "\n![learning curves](naf_tabular_curves.png)\n"
    anchor = ""
    if LIBRARY_MAF in set(frame["transformer"]):
        anchor = (f"\n{common.DISPLAY[LIBRARY_MAF]}: zuko's `MAF` (core.naf.library: monotonic affine transformers, a ReLU MADE "
                  "of the same width per flow, orders alternating natural / reversed, base N(0, I)) trained on the same data "
                  "one seed per trial, with each seed's data order, Adam, clip and patience as our rows: a library's MAF "
                  "beside ours, not the same model.\n")
    return ("Mean test log-likelihood (nats, higher is better) of the best-validation checkpoint; ± s.e. over seeds, and the mean "
            "over seeds of ± 2 s.e. over test points (the MAF paper's error bars). mixture6 and digits63 are our offline "
            "constructions: no published numbers.\n\n" + table + anchor + truth
            + "\nPublished (test LL, nats; NAF's ± over 5 runs, MAF-paper rows: 2 s.e. over test points of one run):\n\n" + published_table())


PIPELINE = Pipeline(
    name="naf-tabular",
    description="NAF's UCI table: test log-likelihood of MAF / affine / DSF / DDSF flows (offline: mixture6, digits63)",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=load_data,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
