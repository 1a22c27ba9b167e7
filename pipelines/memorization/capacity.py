"""Thesis Fig 3.5/3.6: capacity, dataset size and noise; validation accuracy and epochs to fit the training set.

Varies: noise fraction (of ``noise``: randX in the thesis' Fig 3.6, inputs
replaced by Gaussian noise; or randY), and in part ``width`` the hidden units
(at n_train examples), in part ``size`` the number of training examples (at
``size_width`` units), and seed. Every run trains by SGD (§3.2: lr 0.01) for
the same budget of ``epochs``, so every width and size is measured at the same
point of training. A trial trains all widths (or sizes) and seeds of one noise
fraction, each (width, size) group as one stacked block of seeds.
Reports: the best validation accuracy over the budget vs width per noise
fraction (Fig 3.5, "optimal validation performance"; the accuracy at the end
of the budget is in the table); epochs to 100% training accuracy vs width and
vs dataset size (Fig 3.6), where a run that never fit within the budget is
censored: it counts at the budget in the mean, which is then a lower bound
(drawn hollow, with the count of censored runs).
"""
from __future__ import annotations

import numpy as np

from core.memorization import hparams
from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from tasks.memorization import capacity_trainable

PARTS = ("width", "size")

SETTINGS = {
    **common.data_settings(n_train=500, n_val=397),
    "parts": Setting(list(PARTS), "width: vary hidden units (Fig 3.5, 3.6 left); size: vary training examples (Fig 3.6 right)", choices=PARTS),
    "noise": Setting(hparams.CAPACITY["noise"], f"noise kind of the noise fractions (thesis Fig 3.6: {hparams.CAPACITY['noise']})",
                     choices=("randX", "randY")),
    "fractions": Setting([0.0, 0.2, 0.4, 0.6, 0.8], "noise fractions (0: real data)", ge=0, le=1),
    "widths": Setting(list(hparams.CAPACITY["widths"]), "part width: hidden units per layer (Fig 3.5's)", ge=1),
    "sizes": Setting([125, 250, 500], "part size: training examples (first n of the training set)", ge=1),
    "size_width": Setting(hparams.MLP["width"], f"part size: hidden units per layer (paper: {hparams.MLP['width']})", ge=1),
    "seeds": Setting(3, "seeds per (fraction, width or size)", ge=1),
    "epochs": Setting(hparams.MLP["epochs"], "epochs every run trains (the same budget for every width and size; paper: "
                      f"{hparams.MLP['epochs']})", ge=1),
    "batch_size": Setting(16, "minibatch size (not given in the chapter)", ge=1),
    "lr": Setting(hparams.MLP["lr"], f"SGD learning rate (paper: {hparams.MLP['lr']:g})", gt=0),
    "data_seed": Setting(0, "seed of the noise datasets", ge=0),
}
PRESETS = {
    "smoke": dict(fractions=[0.0, 0.5, 1.0], widths=[16, 64, 256], size_width=256, epochs=60, batch_size=32, lr=0.1),
    "paper": dict(dataset="mnist", n_train=hparams.CAPACITY["n_train"], n_val=10000, sizes=list(hparams.CAPACITY["sizes"]),
                  batch_size=128),
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, fractions=[0.0, 0.4, 0.8], widths=[16, 64, 256, 1024],
                  sizes=[250, 500, 1000], size_width=256, seeds=2, epochs=200),
}
PRESET_HELP = {
    "smoke": "embedded digits, SGD lr 0.1 (not 0.01) for 60 epochs, widths 16-256",
    "paper": "Fig 3.5/3.6: 50,000 MNIST training images (--data-dir with the training split), widths 256-8192, sizes "
             "5,000-50,000 at 4096 units, SGD lr 0.01, 1000 epochs, batch 128",
    "mnist": "1,000 MNIST digits (../shared/data/mnist holds the 10,000-image test split), SGD lr 0.01 as §3.2, but 200 "
             "epochs (not 1000), widths 16-1024 and sizes at 256 units (not 4096): a 2-core budget; batch 16",
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
    label = lambda c: f"{c['part']} {common.noise_label(c['noise'], c['fraction'])} width={c['width']} n={c['n_train']} seed={c['seed']}"
    return [Stage("runs", capacity_trainable, Grid(configs(settings)), metric="val_acc", label=label)]


def time_to_fit(group, budget: int) -> dict:
    """Epochs to 100% training accuracy over a group's runs, never-fitting runs censored at the budget:
    the mean (a lower bound when any is censored), its std, the censored count and the runs."""
    fit = np.where(group["fit"].astype(bool), group["epochs_to_fit"].astype(float), float(budget))
    censored = int((~group["fit"].astype(bool)).sum())
    return {"mean": float(fit.mean()), "std": float(fit.std()), "censored": censored, "runs": len(fit)}


def summaries(frame) -> list[dict]:
    """One row per (part, fraction, width or size): best and final validation accuracy (mean, std), final training
    accuracy and the censored time to fit."""
    budget = int(frame["epochs"].max())
    out = []
    for (part, fraction), group in frame.groupby(["part", "fraction"]):
        column = "width" if part == "width" else "n_train"
        for value, runs in group.groupby(column):
            out.append({"part": part, "fraction": float(fraction), "value": int(value),
                        **{f"{m}_{k}": v for m in ("best_val_acc", "val_acc") for k, v in zip(("mean", "std"), reports.mean_std(runs[m]))},
                        "train_acc_mean": float(runs["train_acc"].mean()), "fit": time_to_fit(runs, budget)})
    return out


def report(frame, curves, out_dir: str) -> str:
    noise, budget = frame["noise"].iloc[0], int(frame["epochs"].max())
    parts = [p for p in PARTS if p in set(frame["part"])]
    table = summaries(frame)
    fig, axes = reports.figure(1, 1 + len(parts), figsize=(5 * (1 + len(parts)), 4), squeeze=False)
    axes = list(axes[0])
    for i, fraction in enumerate(sorted({r["fraction"] for r in table})):
        color, name = f"C{i}", f"noise {fraction:g}"
        widths = [r for r in table if r["part"] == "width" and r["fraction"] == fraction]
        if widths:
            axes[0].errorbar([r["value"] for r in widths], [r["best_val_acc_mean"] for r in widths], yerr=[r["best_val_acc_std"] for r in widths],
                             fmt="o-", color=color, label=name, capsize=2)
        for ax, part in zip(axes[1:], parts):
            pts = [r for r in table if r["part"] == part and r["fraction"] == fraction]
            xs, ys = [r["value"] for r in pts], [r["fit"]["mean"] for r in pts]
            ax.errorbar(xs, ys, yerr=[r["fit"]["std"] for r in pts], fmt="-", color=color, label=name, capsize=2)
            for x, y, r in zip(xs, ys, pts):
                censored = r["fit"]["censored"]
                ax.plot([x], [y], "o", color=color, mfc="white" if censored else color)
                if censored:
                    ax.annotate(f"≥ ({censored}/{r['fit']['runs']} censored)", (x, y), fontsize=6, color=color,
                                textcoords="offset points", xytext=(3, 4))
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("hidden units per layer")
    axes[0].set_ylabel(f"best validation accuracy within {budget} epochs")
    axes[0].set_title(f"capacity vs {noise} noise (Fig 3.5)")
    for ax, part in zip(axes[1:], parts):
        ax.axhline(budget, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden units per layer" if part == "width" else "training examples")
        ax.set_ylabel("epochs to 100% training accuracy")
        ax.set_title(f"time to fit vs {'capacity' if part == 'width' else 'dataset size'} (Fig 3.6)")
    for ax in axes:
        ax.legend(fontsize=7)
    reports.save_figure(fig, f"{out_dir}/capacity.png", dpi=110)
    rows = [[r["part"], f"{r['fraction']:g}", r["value"], reports.pm(100 * r["best_val_acc_mean"], 100 * r["best_val_acc_std"]),
             reports.pm(100 * r["val_acc_mean"], 100 * r["val_acc_std"]), f"{100 * r['train_acc_mean']:.1f}",
             ("≥ " if r["fit"]["censored"] else "") + reports.pm(r["fit"]["mean"], r["fit"]["std"]),
             f"{r['fit']['censored']}/{r['fit']['runs']}"] for r in table]
    markdown = reports.markdown_table(["part", f"{noise} fraction", "width / n_train", "best val acc (%)",
                                       f"val acc at epoch {budget} (%)", "train acc (%)", "epochs to fit", "censored"], rows)
    return (f"2-layer MLPs trained by SGD for {budget} epochs each (the same budget for every width and size), mean ± std "
            f"over seeds. Epochs to fit: a run that never reached 100% training accuracy counts as {budget} (censored), so "
            f"a mean with censored runs (≥) is a lower bound. {common.protocol(frame.iloc[0], varied=('width',))}\n\n" + markdown)


PIPELINE = Pipeline(
    name="memorization-capacity",
    description="Thesis Fig 3.5/3.6: validation accuracy vs width per noise level; epochs to 100% training accuracy vs width and dataset size",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=common.load_data,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
