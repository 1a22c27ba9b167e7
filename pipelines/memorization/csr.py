"""Thesis Fig 3.7-3.9: accuracy and critical sample ratio (CSR) through training, real vs noise data.

Varies: noise (real; randX: inputs replaced by Gaussian noise; randY: labels
redrawn uniformly) and noise fraction, seed. Every epoch: training and
validation accuracy, and the CSR: the fraction of ``csr_examples`` validation
points, drawn afresh at random every epoch, for which LASS (alpha 0.25, beta
0.2, box 0.3 on the 0-255 scale, at most ``lass_iters`` steps, stopped once a
step finds fewer than ``lass_min_new`` new critical points, model in eval
mode) finds a point of another predicted class. The defaults are the
reference code's (xingjunm/dimensionality-driven-learning ``callback_util.py``
and ``lass_tf.py``: 500 fresh points per epoch, 100 iterations, threshold 20).
Fixed: the model and optimizer (§3.2: MLP on MNIST, SGD lr 0.01; the small
CNN on CIFAR-10, SGD momentum 0.9, lr 0.01 halved every 15 epochs).
Reports: per noise kind, accuracy (solid train, dotted validation) and CSR vs
epoch, one colour per noise fraction, mean and spread over seeds; and a table
(final CSR, peak validation accuracy and the epoch it peaked vs when training
accuracy saturated), mean ± std over seeds.
"""
from __future__ import annotations

import numpy as np

from core.memorization import hparams
from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from tasks.memorization import csr_trainable

SETTINGS = {
    **common.data_settings(n_train=500, n_val=397),
    **common.training_settings(batch_size=16),  # §3.2's MLP
    "noises": Setting(["randX", "randY"], "noise kinds (each at every fraction; real data is always run)", choices=("randX", "randY")),
    "fractions": Setting([0.2, 0.4, 0.6, 0.8, 1.0], "noise fractions (paper: 0.2-0.8 in Fig 3.7/3.8, 1.0 in Fig 3.9)", gt=0, le=1),
    "csr_examples": Setting(hparams.CSR_EXAMPLES, "validation examples drawn afresh each epoch for the CSR (reference code: "
                            f"{hparams.CSR_EXAMPLES})", ge=1),
    **common.lass_settings(),
}
SETTINGS["seeds"] = Setting(3, "seeds per configuration (model init, data order, CSR draws, LASS noise)", ge=1)

CIFAR = dict(dataset="cifar10", model="cnn", n_train=0, n_val=10000, epochs=hparams.CSR_CIFAR_EPOCHS, batch_size=128,
             momentum=hparams.CNN["momentum"], lr_step=hparams.CNN["lr_step"])
PRESETS = {
    "smoke": dict(width=512, epochs=15, batch_size=32, optimizer="adam", lr=1e-3, fractions=[0.5, 1.0], csr_examples=100, seeds=1),
    "paper": dict(dataset="mnist", n_train=0, n_val=10000, batch_size=128),
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, width=512, epochs=200, fractions=[0.2, 0.6, 1.0]),
    "cifar10": dict(CIFAR, fractions=[0.2, 0.4, 0.6, 0.8]),
    "cifar10-random": dict(CIFAR, fractions=[1.0]),
}
PRESET_HELP = {
    "smoke": "embedded digits, Adam lr 1e-3 (fits noise within 15 epochs), 2 x 512, 100 CSR points (the smoke validation set has 397)",
    "paper": "Fig 3.7: MNIST (--data-dir with the training split), §3.2's MLP (2 x 4096, SGD lr 0.01, 1000 epochs), batch 128",
    "mnist": "1,000 MNIST digits (../shared/data/mnist holds the 10,000-image test split): SGD lr 0.01 as §3.2, but 2 x 512 "
             "units and 200 epochs (not 4096 and 1000: a 2-core budget), batch 16",
    "cifar10": "Fig 3.8: CIFAR-10, the small CNN, SGD momentum 0.9, lr 0.01 halved every 15 epochs (§3.2); 120 epochs and batch "
               "128 (the chapter gives neither; 120 as the LASS reference repository's CIFAR-10 CSR plot, complexity_plot.py)",
    "cifar10-random": "Fig 3.9: as cifar10, real vs 100% randX and 100% randY",
}


def configs(settings: dict) -> list[dict]:
    shared = {**common.training_keys(settings), "csr_examples": settings["csr_examples"], "lass_iters": settings["lass_iters"],
              "lass_min_new": settings["lass_min_new"]}
    points = [("real", 0.0)] + [(n, float(f)) for n in settings["noises"] for f in settings["fractions"]]
    return [dict(shared, noise=n, fraction=f, seed=s) for n, f in points for s in range(settings["seeds"])]


def check(settings: dict) -> None:
    if settings["csr_examples"] > settings["n_val"]:
        raise GensweepError(f"csr_examples={settings['csr_examples']} is more than n_val={settings['n_val']} (each epoch draws "
                            "csr_examples of the validation set)")


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{common.noise_label(c['noise'], c['fraction'])} seed={c['seed']}"
    return [Stage("training", csr_trainable, Grid(configs(settings)), metric="csr", mode="max", label=label)]


def saturated(series, level: float = 0.99) -> float:
    """First epoch where training accuracy reaches ``level`` of its final value (nan when none)."""
    hit = series[series >= level * series.iloc[-1]]
    return float(hit.index[0]) if len(hit) else float("nan")


def run_summaries(frame, curves):
    """One row per run (trial_key): its noise, fraction, final metrics, peak validation accuracy and epoch, saturation
    epoch and mean CSR over training, from the trial rows and their curves."""
    import pandas as pd

    out = []
    for _, row in frame.iterrows():
        curve = curves[curves["trial_key"] == row["trial_key"]].sort_values("step").set_index("step")
        out.append({"trial_key": row["trial_key"], "noise": row["noise"], "fraction": float(row["fraction"]),
                    "train_acc": row["train_acc"], "val_acc": row["val_acc"], "csr": row["csr"],
                    "peak_val_acc": float(curve["val_acc"].max()), "peak_epoch": float(curve["val_acc"].idxmax()),
                    "saturates": saturated(curve["train_acc"]), "mean_csr": float(curve["csr"].mean())})
    return pd.DataFrame(out)


def _band(ax, stats, column: str, style: str, color: str, label: str | None) -> None:
    """Mean over seeds with a ±std band."""
    mean, std = stats[(column, "mean")], stats[(column, "std")].fillna(0.0)
    ax.plot(mean.index, mean.values, style, color=color, label=label)
    ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.15, lw=0)


def report(frame, curves, out_dir: str) -> str:
    runs = run_summaries(frame, curves)
    pm = lambda values, scale=1.0, digits=1: reports.pm(*reports.mean_std(np.asarray(values, dtype=float) * scale), digits=digits)
    rows = []
    for (noise, fraction), group in runs.groupby(["noise", "fraction"]):
        rows.append([common.noise_label(noise, fraction), pm(group["train_acc"], 100), pm(group["val_acc"], 100),
                     pm(group["peak_val_acc"], 100), pm(group["peak_epoch"], digits=0), pm(group["saturates"], digits=0),
                     pm(group["csr"], digits=3), pm(group["mean_csr"], digits=3), len(group)])
    merged = common.curve_columns(frame, curves, ["noise", "fraction"])
    kinds = [n for n in ("randX", "randY") if n in set(merged["noise"])] or ["real"]
    fig, axes = reports.figure(len(kinds), 2, figsize=(11, 3.8 * len(kinds)), squeeze=False)
    for (ax_acc, ax_csr), kind in zip(axes, kinds):
        part = merged[(merged["noise"] == kind) | (merged["noise"] == "real")]
        for i, (fraction, sub) in enumerate(sorted(part.groupby("fraction"), key=lambda kv: kv[0])):
            stats = sub.groupby("step")[["train_acc", "val_acc", "csr"]].agg(["mean", "std"])
            name = common.noise_label(kind if fraction else "real", fraction)
            color = "k" if fraction == 0 else f"C{i}"
            _band(ax_acc, stats, "train_acc", "-", color, f"{name} train")
            _band(ax_acc, stats, "val_acc", ":", color, None)
            _band(ax_csr, stats, "csr", "-", color, name)
        ax_acc.set_title(f"{kind}: accuracy (solid train, dotted validation)")
        ax_csr.set_title(f"{kind}: critical sample ratio (validation)")
        for ax in (ax_acc, ax_csr):
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
    reports.save_figure(fig, f"{out_dir}/csr.png", dpi=110)
    first = frame.iloc[0]
    seeds = int(frame.groupby(["noise", "fraction"]).size().max())
    table = reports.markdown_table(["data", "final train acc (%)", "final val acc (%)", "peak val acc (%)", "peak epoch",
                                    "train acc saturates (epoch)", "final CSR", "mean CSR over training", "runs"], rows)
    return ("Accuracy and critical sample ratio through training (thesis Fig 3.7-3.9), mean ± std over seeds (bands in the "
            f"figure: ± std). {common.protocol(first)} CSR: {int(first['csr_examples'])} validation points drawn afresh "
            f"each epoch, LASS at most {int(first['lass_iters'])} iterations, stopped once one finds fewer than "
            f"{int(first.get('lass_min_new', 20))} new critical points; up to {seeds} seeds per row.\n\n" + table)


PIPELINE = Pipeline(
    name="memorization-csr",
    description="Thesis Fig 3.7-3.9: train/validation accuracy and critical sample ratio (LASS) through training, real vs randX / randY at several noise fractions",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=common.load_data,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
