"""Thesis Fig 3.10/3.11: regularizers vs memorization (real data vs random labels).

Varies: dataset (real, randY), regularizer (dropout, input dropout, input
Gaussian noise, hidden Gaussian noise, weight decay, dropout + adversarial
training on LASS critical samples) and its value, seed; plus one unregularized
baseline per dataset (value 0 of every curve). One model per configuration.
Fixed: the model (MLP on digits/MNIST, the small CNN on CIFAR-10 in the paper
preset), the optimizer, the epochs.
Reports: final randY training accuracy (x) vs best real validation accuracy
(y), one curve per regularizer (Fig 3.10); training curves per regularizer on
randY and real data (Fig 3.11).
"""
from __future__ import annotations

from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import Grid, Pipeline, Setting, Stage
from tasks.memorization import regularizer_trainable

REGULARIZERS = ("dropout", "input_dropout", "input_noise", "hidden_noise", "weight_decay", "adversarial")
NAMES = {"dropout": "dropout", "input_dropout": "input dropout", "input_noise": "input noise", "hidden_noise": "hidden noise",
         "weight_decay": "weight decay", "adversarial": "dropout + adv. training"}

SETTINGS = {
    **common.data_settings(n_train=500, n_val=397),
    **common.training_settings(width=512, epochs=30, batch_size=32, lr=1e-3, optimizer="adam"),
    "regularizers": Setting(list(REGULARIZERS), "regularizers to sweep", choices=REGULARIZERS),
    "datasets": Setting(["real", "randY"], "datasets: real and/or randY (100% random labels)", choices=("real", "randY")),
    "dropout": Setting([0.5, 0.8], "dropout rates (paper: 0-0.9)", ge=0, le=0.99),
    "input_dropout": Setting([0.3, 0.7], "input dropout rates (paper: 0-0.9)", ge=0, le=0.99),
    "input_noise": Setting([0.5, 2.0], "input Gaussian noise stds (paper: 0-5)", ge=0),
    "hidden_noise": Setting([0.1, 0.3], "hidden Gaussian noise stds (paper: 0-0.3)", ge=0),
    "weight_decay": Setting([1e-3, 1e-2], "weight decays (paper: 0-1)", ge=0),
    "adversarial": Setting([0.5], "adversarial-training weights on LASS critical samples (paper: 0.2-0.7)", ge=0, le=1),
    "adversarial_dropout": Setting([0.2], "dropout rates combined with each adversarial weight (paper: 0.03-0.5)", ge=0, le=0.99),
    "lass_iters": Setting(10, "LASS iterations per batch in adversarial training (paper code: 100)", ge=1),
}
PRESETS = {
    "smoke": {},
    "paper": dict(
        dataset="cifar10", model="cnn", n_train=0, n_val=10000, epochs=100, batch_size=128, optimizer="sgd", lr=0.01,
        momentum=0.9, lr_step=15, dropout=[0.1, 0.3, 0.5, 0.7, 0.9], input_dropout=[0.1, 0.3, 0.5, 0.7, 0.9],
        input_noise=[0.5, 1.0, 2.0, 3.5, 5.0], hidden_noise=[0.05, 0.1, 0.2, 0.3], weight_decay=[1e-4, 1e-3, 1e-2, 0.1, 1.0],
        adversarial=[0.2, 0.45, 0.7], adversarial_dropout=[0.03, 0.25, 0.5], lass_iters=100,
    ),
    # MNIST digits (--data-dir ../shared/data/mnist: the 10k test split), MLP, a few minutes on 2 CPU cores.
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, width=256, epochs=25, regularizers=["dropout", "weight_decay"],
                  dropout=[0.5, 0.8], weight_decay=[1e-3]),
}


def configs(settings: dict) -> list[dict]:
    """One config per (dataset, regularizer, value, seed), plus the unregularized baseline per (dataset, seed)."""
    points = [("none", 0.0, 0.0)]
    for reg in settings["regularizers"]:
        if reg == "adversarial":
            points += [(reg, w, d) for w in settings["adversarial"] for d in settings["adversarial_dropout"]]
        else:
            points += [(reg, v, 0.0) for v in settings[reg]]
    shared = {**common.training_keys(settings), "fraction": 1.0, "lass_iters": settings["lass_iters"]}
    return [dict(shared, noise=noise, regularizer=reg, value=float(value), adv_dropout=float(drop), seed=seed)
            for noise in settings["datasets"] for reg, value, drop in points for seed in range(settings["seeds"])]


def _label(c: dict) -> str:
    extra = f" dropout={c['adv_dropout']:g}" if c["regularizer"] == "adversarial" else ""
    return f"{c['noise']} {c['regularizer']}={c['value']:g}{extra} seed={c['seed']}"


def stages(settings: dict) -> list[Stage]:
    return [Stage("models", regularizer_trainable, Grid(configs(settings)), metric="best_val_acc", label=_label)]


def report(frame, curves, out_dir: str) -> str:
    """Fig 3.10 (randY final train acc vs real best val acc per regularizer), Fig 3.11 curves, and a table."""
    plt = common.pyplot()
    means = frame.groupby(["noise", "regularizer", "value", "adv_dropout"])[["train_acc", "best_val_acc", "val_acc"]].mean()
    rows, points = [], {}
    if {"real", "randY"} <= set(frame["noise"]):
        real, rand = means.loc["real"], means.loc["randY"]
        base = (rand.loc[("none", 0.0, 0.0), "train_acc"], real.loc[("none", 0.0, 0.0), "best_val_acc"]) if ("none", 0.0, 0.0) in rand.index and ("none", 0.0, 0.0) in real.index else None
        for key in sorted(set(real.index) & set(rand.index)):
            x, y = float(rand.loc[key, "train_acc"]), float(real.loc[key, "best_val_acc"])
            rows.append([NAMES.get(key[0], key[0]), f"{key[1]:g}" + (f" (dropout {key[2]:g})" if key[0] == "adversarial" else ""),
                         f"{100 * x:.1f}", f"{100 * y:.1f}", f"{100 * float(real.loc[key, 'val_acc']):.1f}"])
            if key[0] != "none":
                points.setdefault(key[0], []).append((key[1], key[2], x, y))
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for i, (reg, pts) in enumerate(sorted(points.items())):
            pts = sorted(pts)
            xs, ys = [p[2] for p in pts], [p[3] for p in pts]
            if base is not None:
                xs, ys = [base[0]] + xs, [base[1]] + ys
            ax.plot(xs, ys, "o-", color=f"C{i}", label=NAMES.get(reg, reg), alpha=0.85)
        if base is not None:
            ax.plot([base[0]], [base[1]], "k*", ms=12, label="no regularizer")
        ax.set_xlabel("final training accuracy on randY")
        ax.set_ylabel("best validation accuracy on real data")
        ax.set_title("Regularizers vs memorization (thesis Fig 3.10)")
        ax.legend(fontsize=7)
        common.save(fig, f"{out_dir}/regularizers.png")
    if not curves.empty:
        merged = common.curve_columns(frame, curves, ["noise", "regularizer", "value", "adv_dropout"])
        noises = [n for n in ("randY", "real") if n in set(merged["noise"])]
        fig, axes = plt.subplots(1, len(noises), figsize=(6 * len(noises), 4.2), squeeze=False)
        for ax, noise in zip(axes[0], noises):
            part = merged[merged["noise"] == noise]
            regs = sorted(set(part["regularizer"]))
            for i, reg in enumerate(regs):
                sub = part[part["regularizer"] == reg]
                # one curve per regularizer: its strongest value (the largest), to separate the curves as Fig 3.11 does
                top = sub[(sub["value"] == sub["value"].max())]
                top = top[top["adv_dropout"] == top["adv_dropout"].max()]
                series = top.groupby("step")["train_acc"].mean()
                name = NAMES.get(reg, reg) if reg != "none" else "no regularizer"
                value = "" if reg == "none" else f" {top['value'].iloc[0]:g}"
                ax.plot(series.index, series.values, "-", color=f"C{i}", label=f"{name}{value} (train)")
                val = top.groupby("step")["val_acc"].mean()
                ax.plot(val.index, val.values, ":", color=f"C{i}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy (solid: train, dotted: validation)")
            ax.set_title(f"training curves on {noise} (thesis Fig 3.11)")
            ax.legend(fontsize=6)
        common.save(fig, f"{out_dir}/curves.png")
    table = reports.markdown_table(["regularizer", "value", "randY final train acc (%)", "real best val acc (%)", "real final val acc (%)"], rows)
    return ("Each point: one regularizer at one value, mean over seeds. A flat curve caps memorization of random labels "
            "without costing validation accuracy on real data (thesis §3.5).\n\n" + table)


PIPELINE = Pipeline(
    name="memorization-regularizers",
    description="Thesis Fig 3.10/3.11: regularizers (dropout, input dropout, input/hidden noise, weight decay, dropout + "
                "adversarial training) vs memorization of random labels",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=common.load_data,
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
