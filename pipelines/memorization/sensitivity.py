"""Thesis Fig 3.3/3.4: loss-sensitivity g_bar_x by unrolled SGD, its Gini coefficient, and the per-class matrix.

Varies: inputs (real 14x14 digits, or random: every input replaced by Gaussian
noise), labels (normal, or one class per example), seed. A 2-layer MLP of 16
units trained by plain SGD (lr 0.01, §3.2's) on 1,000 examples; g^t_x =
||dL_t/dx||_1 of the average training loss after t steps w.r.t. each training
example, by back-propagating through the unrolled updates
(core.memorization.sensitivity), measured every ``measure_every`` steps. The
seeds of a setting are unrolled together as one stacked block in one trial.
Reports: Gini of g_bar_x (mean of g^t_x over the measured steps so far) vs
step, real vs random, for normal labels and one class per example (Fig 3.3);
the per-class matrix (row: class of the loss term, column: class of the
example; log scale), real vs random (Fig 3.4).
"""
from __future__ import annotations

import json

import numpy as np

from core.memorization import hparams
from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import Grid, Pipeline, Setting, Stage
from tasks.memorization import sensitivity_trainable

SETTINGS = {
    **common.data_settings(n_train=hparams.SENSITIVITY["n_train"], n_val=1),
    "inputs": Setting(["real", "random"], "inputs: real images, random (Gaussian noise, randX 100%)", choices=("real", "random")),
    "labels": Setting(["normal", "oneclass"], "labels: normal, or one class per example", choices=("normal", "oneclass")),
    "seeds": Setting(3, "seeds per setting (unrolled together in one trial)", ge=1),
    "width": Setting(hparams.SENSITIVITY["width"], f"hidden units per layer (paper: {hparams.SENSITIVITY['width']})", ge=1),
    "steps": Setting(1000, "SGD steps unrolled", ge=1),
    "measure_every": Setting(50, "steps between measurements of g^t_x (from the end of the first epoch on)", ge=1),
    "batch_size": Setting(50, "SGD minibatch size (not given in the chapter)", ge=1),
    "lr": Setting(hparams.MLP["lr"], f"SGD learning rate (§3.2: {hparams.MLP['lr']:g})", gt=0),
    "class_matrix": Setting(True, "also measure the per-class matrix (normal labels; one batched backward pass per step)"),
    "data_seed": Setting(0, "seed of the random inputs", ge=0),
}
PRESETS = {
    "smoke": dict(seeds=2, steps=80, measure_every=10, lr=0.1),
    "paper": dict(dataset="mnist", seeds=5),
    "mnist": dict(dataset="mnist"),
}
PRESET_HELP = {
    "smoke": "embedded digits, 80 steps at SGD lr 0.1 (not 0.01: the tiny net learns within 80 steps), 2 seeds",
    "paper": "Fig 3.3/3.4: 1,000 MNIST training images at 14 x 14 (--data-dir with the training split), 2 x 16 units, "
             "SGD lr 0.01, 1,000 steps of batch 50 (the chapter gives neither), 5 seeds",
    "mnist": "as paper on 1,000 of the 10,000 MNIST test images in ../shared/data/mnist, 3 seeds",
}


def configs(settings: dict) -> list[dict]:
    shared = {k: settings[k] for k in ("width", "steps", "measure_every", "batch_size", "lr", "class_matrix", "data_seed")}
    return [dict(shared, inputs=i, labels=lab, block=[{"seed": s} for s in range(settings["seeds"])])
            for i in settings["inputs"] for lab in settings["labels"]]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['inputs']} inputs, {c['labels']} labels seed={c['seed']}"
    return [Stage("sensitivity", sensitivity_trainable, Grid(configs(settings)), metric="gini", label=label)]


def load_data(settings: dict, data_dir: str | None):
    """The first n_train examples downscaled 2x (28x28 -> 14x14)."""
    return common.load_data(settings, data_dir, downscale=2)


def report(frame, curves, out_dir: str) -> str:
    rows = []
    for (inputs, labels), group in frame.groupby(["inputs", "labels"]):
        rows.append([inputs, labels, reports.pm(*reports.mean_std(group["gini"]), digits=3),
                     reports.pm(*reports.mean_std(group["gini_t"]), digits=3), len(group)])
    if not curves.empty:
        merged = common.curve_columns(frame, curves, ["inputs", "labels"])
        labels = [lab for lab in ("normal", "oneclass") if lab in set(merged["labels"])]
        fig, axes = reports.figure(1, len(labels), figsize=(5.5 * len(labels), 4), squeeze=False)
        for ax, lab in zip(axes[0], labels):
            for inputs, color in (("real", "C0"), ("random", "C3")):
                part = merged[(merged["labels"] == lab) & (merged["inputs"] == inputs)]
                if part.empty:
                    continue
                stats = part.groupby("step")["gini"].agg(["mean", "std"]).fillna(0.0)
                ax.plot(stats.index, stats["mean"], "-", color=color, label=f"{inputs} inputs")
                ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2)
            ax.set_xlabel("SGD step")
            ax.set_ylabel("Gini coefficient of loss-sensitivity")
            ax.set_title("normal labels" if lab == "normal" else "one class per example")
            ax.legend(fontsize=8)
        fig.suptitle("Loss-sensitivity concentration (thesis Fig 3.3)")
        reports.save_figure(fig, f"{out_dir}/gini.png", dpi=110)
    matrices = frame[(frame["labels"] == "normal") & frame["class_matrix"].fillna("").astype(bool)] if "class_matrix" in frame else frame.iloc[0:0]
    diag_notes = []
    if not matrices.empty:
        kinds = [k for k in ("real", "random") if k in set(matrices["inputs"])]
        fig, axes = reports.figure(1, len(kinds), figsize=(5 * len(kinds), 4.2), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            m = np.mean([np.array(json.loads(t)) for t in matrices[matrices["inputs"] == kind]["class_matrix"]], axis=0)
            image = ax.imshow(np.log10(np.maximum(m, 1e-12)), cmap="viridis")
            ax.set_xlabel("class j of the training example")
            ax.set_ylabel("class i of the loss term")
            ax.set_title(f"{kind} inputs: log10 per-class g")
            fig.colorbar(image, ax=ax, fraction=0.046)
            off = m[~np.eye(len(m), dtype=bool)].mean()
            diag_notes.append(f"{kind}: diagonal / off-diagonal mean = {np.diag(m).mean() / off:.2f}")
        fig.suptitle("Per-class loss-sensitivity (thesis Fig 3.4)")
        reports.save_figure(fig, f"{out_dir}/class_matrix.png", dpi=110)
    table = reports.markdown_table(["inputs", "labels", "Gini of g_bar_x (end)", "Gini of g^t_x (last step)", "seeds"], rows)
    notes = ("\n\nPer-class matrix: " + "; ".join(diag_notes) + ".") if diag_notes else ""
    return ("Loss-sensitivity of 2-layer MLPs on 14x14 images, mean ± std over seeds: a higher Gini means the loss "
            "depends on few examples (thesis: real data), a lower one that it depends on all (random data). "
            f"{common.protocol(frame.iloc[0], {'width': 16})}\n\n" + table + notes)


PIPELINE = Pipeline(
    name="memorization-sensitivity",
    description="Thesis Fig 3.3/3.4: Gini coefficient of unrolled loss-sensitivity through training and the per-class matrix, real vs random inputs",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=load_data,
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
