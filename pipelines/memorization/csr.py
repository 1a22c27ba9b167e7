"""Thesis Fig 3.7-3.9: accuracy and critical sample ratio (CSR) through training, real vs noise data.

Varies: noise (real; randX: inputs replaced by Gaussian noise; randY: labels
redrawn uniformly) and noise fraction, seed. Every epoch: training and
validation accuracy, and the CSR: the fraction of the first ``csr_examples``
validation points for which LASS (alpha 0.25, beta 0.2, box 0.3 on the 0-255
scale, at most ``lass_iters`` steps, model in eval mode) finds a point of
another predicted class.
Reports: per noise kind, accuracy (solid train, dotted validation) and CSR vs
epoch, one colour per noise fraction; and a table (final CSR, peak validation
accuracy and the epoch it peaked vs when training accuracy saturated).
"""
from __future__ import annotations

import numpy as np

from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import Grid, Pipeline, Setting, Stage
from tasks.memorization import csr_trainable

SETTINGS = {
    **common.data_settings(n_train=500, n_val=397),
    **common.training_settings(width=512, epochs=15, batch_size=32, lr=1e-3, optimizer="adam"),
    "noises": Setting(["randX", "randY"], "noise kinds (each at every fraction; real data is always run)", choices=("randX", "randY")),
    "fractions": Setting([0.5, 1.0], "noise fractions (paper: 0.2-0.8 and 1.0)", gt=0, le=1),
    "csr_examples": Setting(100, "validation examples the CSR is measured on, every epoch (paper: 500)", ge=1),
    "lass_iters": Setting(100, "LASS iterations at most (reference code: 100)", ge=1),
}
PRESETS = {
    "smoke": {},
    "paper": dict(dataset="mnist", n_train=0, n_val=10000, width=4096, epochs=1000, batch_size=128, optimizer="sgd", lr=0.01,
                  fractions=[0.2, 0.4, 0.6, 0.8, 1.0], csr_examples=500),
    # MNIST digits (--data-dir ../shared/data/mnist), minutes on 2 CPU cores.
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, width=256, epochs=20, fractions=[0.2, 0.8], csr_examples=100),
}


def configs(settings: dict) -> list[dict]:
    shared = {**common.training_keys(settings), "csr_examples": settings["csr_examples"], "lass_iters": settings["lass_iters"]}
    points = [("real", 0.0)] + [(n, float(f)) for n in settings["noises"] for f in settings["fractions"]]
    return [dict(shared, noise=n, fraction=f, seed=s) for n, f in points for s in range(settings["seeds"])]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{common.noise_label(c['noise'], c['fraction'])} seed={c['seed']}"  # noqa: E731
    return [Stage("training", csr_trainable, Grid(configs(settings)), metric="csr", mode="max", label=label)]


def _saturated(series, level: float = 0.99) -> float:
    """First epoch where training accuracy reaches ``level`` of its final value (nan when none)."""
    hit = series[series >= level * series.iloc[-1]]
    return float(hit.index[0]) if len(hit) else float("nan")


def report(frame, curves, out_dir: str) -> str:
    plt = common.pyplot()
    rows = []
    merged = common.curve_columns(frame, curves, ["noise", "fraction"]) if not curves.empty else curves
    for (noise, fraction), group in frame.groupby(["noise", "fraction"]):
        part = merged[(merged["noise"] == noise) & (merged["fraction"] == fraction)] if not merged.empty else merged
        mean = part.groupby("step")[["train_acc", "val_acc", "csr"]].mean() if not part.empty else None
        peak = f"{int(mean['val_acc'].idxmax())}" if mean is not None else "-"
        sat = f"{_saturated(mean['train_acc']):.0f}" if mean is not None else "-"
        rows.append([common.noise_label(noise, fraction), f"{100 * group['train_acc'].mean():.1f}", f"{100 * group['val_acc'].mean():.1f}",
                     f"{100 * (mean['val_acc'].max() if mean is not None else np.nan):.1f}", peak, sat,
                     f"{group['csr'].mean():.3f}", f"{(mean['csr'].mean() if mean is not None else np.nan):.3f}", len(group)])
    if not merged.empty:
        kinds = [n for n in ("randX", "randY") if n in set(merged["noise"])] or ["real"]
        fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 3.8 * len(kinds)), squeeze=False)
        for (ax_acc, ax_csr), kind in zip(axes, kinds):
            part = merged[(merged["noise"] == kind) | (merged["noise"] == "real")]
            for i, (fraction, sub) in enumerate(sorted(part.groupby("fraction"), key=lambda kv: kv[0])):
                mean = sub.groupby("step")[["train_acc", "val_acc", "csr"]].mean()
                name = common.noise_label(kind if fraction else "real", fraction)
                color = "k" if fraction == 0 else f"C{i}"
                ax_acc.plot(mean.index, mean["train_acc"], "-", color=color, label=f"{name} train")
                ax_acc.plot(mean.index, mean["val_acc"], ":", color=color)
                ax_csr.plot(mean.index, mean["csr"], "-", color=color, label=name)
            ax_acc.set_title(f"{kind}: accuracy (solid train, dotted validation)")
            ax_csr.set_title(f"{kind}: critical sample ratio (validation)")
            for ax in (ax_acc, ax_csr):
                ax.set_xlabel("epoch")
                ax.legend(fontsize=7)
        common.save(fig, f"{out_dir}/csr.png")
    table = reports.markdown_table(["data", "final train acc (%)", "final val acc (%)", "peak val acc (%)", "peak epoch",
                                    "train acc saturates (epoch)", "final CSR", "mean CSR over training", "runs"], rows)
    return "Accuracy and critical sample ratio through training (thesis Fig 3.7-3.9), mean over seeds.\n\n" + table


PIPELINE = Pipeline(
    name="memorization-csr",
    description="Thesis Fig 3.7-3.9: train/validation accuracy and critical sample ratio (LASS) through training, real vs randX / randY at several noise fractions",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=common.load_data,
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
