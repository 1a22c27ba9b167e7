"""Thesis Fig 3.5/3.6: capacity, dataset size and noise; validation accuracy and epochs to fit the training set.

Varies: noise fraction (of ``noise``: randX in the thesis' Fig 3.6, inputs
replaced by Gaussian noise; or randY), and in part ``width`` the hidden units
(at n_train examples), in part ``size`` the number of training examples (at
``size_width`` units), and seed. Every run trains by SGD until 100% training
accuracy or ``epochs``. A trial trains all widths (or sizes) and seeds of one
noise fraction, each (width, size) group as one stacked block of seeds.
Reports: validation accuracy vs width per noise fraction (Fig 3.5); epochs to
100% training accuracy vs width and vs dataset size (Fig 3.6).
"""
from __future__ import annotations

import numpy as np

from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from tasks.memorization import capacity_trainable

PARTS = ("width", "size")

SETTINGS = {
    **common.data_settings(n_train=500, n_val=397),
    "parts": Setting(list(PARTS), "width: vary hidden units (Fig 3.5, 3.6 left); size: vary training examples (Fig 3.6 right)", choices=PARTS),
    "noise": Setting("randX", "noise kind of the noise fractions (thesis Fig 3.6: randX)", choices=("randX", "randY")),
    "fractions": Setting([0.0, 0.5, 1.0], "noise fractions (0: real data)", ge=0, le=1),
    "widths": Setting([16, 64, 256], "part width: hidden units per layer", ge=1),
    "sizes": Setting([125, 250, 500], "part size: training examples (first n of the training set)", ge=1),
    "size_width": Setting(256, "part size: hidden units per layer (paper: 4096)", ge=1),
    "seeds": Setting(3, "seeds per (fraction, width or size)", ge=1),
    "epochs": Setting(150, "epochs at most (runs stop at 100% training accuracy)", ge=1),
    "batch_size": Setting(32, "minibatch size", ge=1),
    "lr": Setting(0.1, "SGD learning rate (paper: 0.01)", gt=0),
    "data_seed": Setting(0, "seed of the noise datasets", ge=0),
}
PRESETS = {
    "smoke": {},
    "paper": dict(dataset="mnist", n_train=50000, n_val=10000, fractions=[0.0, 0.2, 0.4, 0.6, 0.8], widths=[256, 512, 1024, 2048, 4096, 8192],
                  sizes=[5000, 10000, 20000, 50000], size_width=4096, epochs=1000, batch_size=128, lr=0.01),
    # MNIST digits (--data-dir ../shared/data/mnist), minutes on 2 CPU cores.
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, fractions=[0.0, 0.4, 0.8], widths=[32, 128, 512], sizes=[250, 500, 1000],
                  size_width=256, seeds=2, epochs=100),
}


def configs(settings: dict) -> list[dict]:
    shared = {k: settings[k] for k in ("noise", "epochs", "batch_size", "lr", "data_seed")}
    out = []
    for fraction in settings["fractions"]:
        seeds = range(settings["seeds"])
        if "width" in settings["parts"]:
            out.append(dict(shared, part="width", fraction=float(fraction),
                            block=[{"width": w, "n_train": settings["n_train"], "seed": s} for w in settings["widths"] for s in seeds]))
        if "size" in settings["parts"]:
            out.append(dict(shared, part="size", fraction=float(fraction),
                            block=[{"width": settings["size_width"], "n_train": n, "seed": s} for n in settings["sizes"] for s in seeds]))
    return out


def check(settings: dict) -> None:
    if "size" in settings["parts"] and settings["n_train"] and max(settings["sizes"]) > settings["n_train"]:
        raise GensweepError(f"sizes: {max(settings['sizes'])} is more than n_train={settings['n_train']}")


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['part']} {common.noise_label(c['noise'], c['fraction'])} width={c['width']} n={c['n_train']} seed={c['seed']}"  # noqa: E731
    return [Stage("runs", capacity_trainable, Grid(configs(settings)), metric="val_acc", label=label)]


def report(frame, curves, out_dir: str) -> str:
    plt = common.pyplot()
    noise = frame["noise"].iloc[0]
    parts = [p for p in PARTS if p in set(frame["part"])]
    fig, axes = plt.subplots(1, 1 + len(parts), figsize=(5 * (1 + len(parts)), 4), squeeze=False)
    axes = list(axes[0])
    rows = []
    for i, (fraction, group) in enumerate(sorted(frame.groupby("fraction"), key=lambda kv: kv[0])):
        color, name = f"C{i}", f"noise {fraction:g}"
        widths = group[group["part"] == "width"]
        if not widths.empty:
            stats = widths.groupby("width")["val_acc"].agg(["mean", "std"]).fillna(0.0)
            axes[0].errorbar(stats.index, stats["mean"], yerr=stats["std"], fmt="o-", color=color, label=name, capsize=2)
        for ax, part, key in zip(axes[1:], parts, parts):
            sub = group[group["part"] == part]
            column = "width" if part == "width" else "n_train"
            fit = sub.groupby(column)["epochs_to_fit"].agg(["mean", "std", "count"])
            ax.errorbar(fit.index, fit["mean"], yerr=fit["std"].fillna(0.0), fmt="o-", color=color, label=name, capsize=2)
            for value, part_rows in sub.groupby(column):
                rows.append([part, f"{fraction:g}", int(value), f"{100 * part_rows['val_acc'].mean():.1f}",
                             f"{100 * part_rows['train_acc'].mean():.1f}", f"{part_rows['epochs_to_fit'].mean():.1f}",
                             f"{int(part_rows['fit'].sum())}/{len(part_rows)}"])
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("hidden units per layer")
    axes[0].set_ylabel("validation accuracy")
    axes[0].set_title(f"capacity vs {noise} noise (Fig 3.5)")
    for ax, part in zip(axes[1:], parts):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden units per layer" if part == "width" else "training examples")
        ax.set_ylabel("epochs to 100% training accuracy")
        ax.set_title(f"time to fit vs {'capacity' if part == 'width' else 'dataset size'} (Fig 3.6)")
    for ax in axes:
        ax.legend(fontsize=7)
    common.save(fig, f"{out_dir}/capacity.png")
    table = reports.markdown_table(["part", f"{noise} fraction", "width / n_train", "val acc (%)", "train acc (%)",
                                    "epochs to fit (fitted runs)", "fitted"], rows)
    epochs = int(frame["epochs"].max()) if "epochs" in frame else 0
    return (f"2-layer MLPs trained by SGD until 100% training accuracy (at most {epochs} epochs), mean over seeds; runs that "
            f"never fit are left out of the epochs-to-fit mean (column fitted).\n\n" + table)


PIPELINE = Pipeline(
    name="memorization-capacity",
    description="Thesis Fig 3.5/3.6: validation accuracy vs width per noise level; epochs to 100% training accuracy vs width and dataset size",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=common.load_data,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
