"""Thesis Fig 3.10/3.11: regularizers vs memorization (real data vs random labels).

Varies: dataset (real, randY), regularizer (dropout, input dropout, input
Gaussian noise, hidden Gaussian noise, weight decay, dropout + adversarial
training on LASS critical samples) and its value, seed; plus one unregularized
baseline per dataset (value 0 of every curve). One model per configuration.
Fixed: the model and optimizer (§3.2: the small CNN on CIFAR-10 with SGD,
momentum 0.9, lr 0.01 halved every 15 epochs, in the paper preset; the MLP
with SGD lr 0.01 on MNIST digits), the epochs. Adversarial training searches
each training batch with LASS at the reference code's settings (thesis: "LASS
with default parameters"; ``lass_tf.py``: at most 100 iterations, stopped once
an iteration finds fewer than 20 new critical points).
Reports: final randY training accuracy (x) vs best real validation accuracy
(y), one curve per regularizer (Fig 3.10); training loss curves per
regularizer on randY and real data (Fig 3.11, "in terms of train loss").
"""
from __future__ import annotations

import numpy as np

from core.memorization import hparams
from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import Grid, Pipeline, Setting, Stage
from tasks.memorization import regularizer_trainable

REGULARIZERS = ("dropout", "input_dropout", "input_noise", "hidden_noise", "weight_decay", "adversarial")
NAMES = {"dropout": "dropout", "input_dropout": "input dropout", "input_noise": "input noise", "hidden_noise": "hidden noise",
         "weight_decay": "weight decay", "adversarial": "dropout + adv. training"}



def paper_range(name: str) -> str:
    """``paper: low-high``: a regularizer's published range (core.memorization.hparams), for its setting's help."""
    low, high = hparams.REGULARIZER_RANGES[name]
    return f"paper: {low:g}-{high:g}"


SETTINGS = {
    **common.data_settings(n_train=500, n_val=397),
    **common.training_settings(batch_size=16),  # §3.2's MLP
    "regularizers": Setting(list(REGULARIZERS), "regularizers to sweep", choices=REGULARIZERS),
    "datasets": Setting(["real", "randY"], "datasets: real and/or randY (100% random labels)", choices=("real", "randY")),
    "dropout": Setting([0.2, 0.5, 0.8], f"dropout rates ({paper_range('dropout')})", ge=0, le=0.99),
    "input_dropout": Setting([0.2, 0.5, 0.8], f"input dropout rates ({paper_range('input_dropout')})", ge=0, le=0.99),
    "input_noise": Setting([0.5, 1.0, 2.0], f"input Gaussian noise stds ({paper_range('input_noise')})", ge=0),
    "hidden_noise": Setting([0.1, 0.2, 0.3], f"hidden Gaussian noise stds ({paper_range('hidden_noise')})", ge=0),
    "weight_decay": Setting([1e-3, 1e-2, 0.1], f"weight decays ({paper_range('weight_decay')})", ge=0),
    "adversarial": Setting([0.2, 0.7], f"adversarial-training weights on LASS critical samples ({paper_range('adversarial')})",
                           ge=0, le=1),
    "adversarial_dropout": Setting([0.25, 0.5], "dropout rates combined with each adversarial weight "
                                   f"({paper_range('adversarial_dropout')})", ge=0, le=0.99),
    **common.lass_settings(),
}
PRESETS = {
    "smoke": dict(width=512, epochs=30, batch_size=32, optimizer="adam", lr=1e-3, dropout=[0.5, 0.8], input_dropout=[0.3, 0.7],
                  input_noise=[0.5, 2.0], hidden_noise=[0.1, 0.3], weight_decay=[1e-3, 1e-2], adversarial=[0.5],
                  adversarial_dropout=[0.2], lass_iters=10),
    "paper": dict(
        dataset="cifar10", model="cnn", n_train=0, n_val=10000, epochs=100, batch_size=128, momentum=hparams.CNN["momentum"],
        lr_step=hparams.CNN["lr_step"], **{name: list(grid) for name, grid in hparams.REGULARIZER_GRIDS.items()},
    ),
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, width=512, epochs=150, seeds=2),
}
PRESET_HELP = {
    "smoke": "embedded digits, 2 x 512, Adam lr 1e-3 (fits random labels within 30 epochs), LASS at most 10 iterations",
    "paper": "Fig 3.10/3.11: CIFAR-10, the small CNN, SGD momentum 0.9, lr 0.01 halved every 15 epochs (§3.2); 100 epochs and "
             "batch 128 (the chapter gives neither)",
    "mnist": "1,000 MNIST digits (../shared/data/mnist holds the 10,000-image test split), all six regularizers, LASS at the "
             "reference's settings; MLP with SGD lr 0.01 as §3.2, but 2 x 512 units and 150 epochs (not the CIFAR-10 CNN; "
             "not 4096 units and 1000 epochs: a 2-core budget), batch 16",
}


def configs(settings: dict) -> list[dict]:
    """One config per (dataset, regularizer, value, seed), plus the unregularized baseline per (dataset, seed)."""
    points = [("none", 0.0, 0.0)]
    for reg in settings["regularizers"]:
        if reg == "adversarial":
            points += [(reg, w, d) for w in settings["adversarial"] for d in settings["adversarial_dropout"]]
        else:
            points += [(reg, v, 0.0) for v in settings[reg]]
    shared = {**common.training_keys(settings), "fraction": 1.0, "lass_iters": settings["lass_iters"],
              "lass_min_new": settings["lass_min_new"]}
    return [dict(shared, noise=noise, regularizer=reg, value=float(value), adv_dropout=float(drop), seed=seed)
            for noise in settings["datasets"] for reg, value, drop in points for seed in range(settings["seeds"])]


def _label(c: dict) -> str:
    extra = f" dropout={c['adv_dropout']:g}" if c["regularizer"] == "adversarial" else ""
    return f"{c['noise']} {c['regularizer']}={c['value']:g}{extra} seed={c['seed']}"


def stages(settings: dict) -> list[Stage]:
    return [Stage("models", regularizer_trainable, Grid(configs(settings)), metric="best_val_acc", label=_label)]


KEY = ["regularizer", "value", "adv_dropout"]


def points(frame):
    """Per (regularizer, value, adversarial dropout) present for both datasets: mean and std over seeds of the randY final
    training accuracy, the real best and final validation accuracy, and the seeds of each dataset."""
    stats = frame.groupby(["noise"] + KEY)[["train_acc", "best_val_acc", "val_acc"]].agg(["mean", "std", "count"])
    if not {"real", "randY"} <= set(frame["noise"]):
        return []
    real, rand = stats.loc["real"], stats.loc["randY"]
    out = []
    for key in sorted(set(real.index) & set(rand.index)):
        out.append({"regularizer": key[0], "value": key[1], "adv_dropout": key[2],
                    "randy_train": rand.loc[key, ("train_acc", "mean")], "randy_train_std": rand.loc[key, ("train_acc", "std")],
                    "real_best_val": real.loc[key, ("best_val_acc", "mean")], "real_best_val_std": real.loc[key, ("best_val_acc", "std")],
                    "real_val": real.loc[key, ("val_acc", "mean")], "real_val_std": real.loc[key, ("val_acc", "std")],
                    "seeds": int(min(rand.loc[key, ("train_acc", "count")], real.loc[key, ("val_acc", "count")]))})
    return out


def _pct(mean: float, std: float) -> str:
    return reports.pm(100 * mean, 0.0 if std != std else 100 * std)


def report(frame, curves, out_dir: str) -> str:
    """Fig 3.10 (randY final train acc vs real best val acc per regularizer), Fig 3.11 training-loss curves, and a table."""
    table_points = points(frame)
    rows = [[NAMES.get(p["regularizer"], p["regularizer"]), f"{p['value']:g}" + (f" (dropout {p['adv_dropout']:g})" if p["regularizer"] == "adversarial" else ""),
             _pct(p["randy_train"], p["randy_train_std"]), _pct(p["real_best_val"], p["real_best_val_std"]),
             _pct(p["real_val"], p["real_val_std"]), p["seeds"]] for p in table_points]
    if table_points:
        base = next((p for p in table_points if p["regularizer"] == "none"), None)
        fig, ax = reports.figure(figsize=(6.5, 4.5))
        for i, reg in enumerate(sorted({p["regularizer"] for p in table_points} - {"none"})):
            pts = sorted((p for p in table_points if p["regularizer"] == reg), key=lambda p: (p["value"], p["adv_dropout"]))
            pts = ([base] if base is not None else []) + pts
            ax.errorbar([p["randy_train"] for p in pts], [p["real_best_val"] for p in pts],
                        xerr=[np.nan_to_num(p["randy_train_std"]) for p in pts], yerr=[np.nan_to_num(p["real_best_val_std"]) for p in pts],
                        fmt="o-", color=f"C{i}", label=NAMES.get(reg, reg), alpha=0.85, capsize=2)
        if base is not None:
            ax.plot([base["randy_train"]], [base["real_best_val"]], "k*", ms=12, label="no regularizer")
        ax.set_xlabel("final training accuracy on randY")
        ax.set_ylabel("best validation accuracy on real data")
        ax.set_title("Regularizers vs memorization (thesis Fig 3.10)")
        ax.legend(fontsize=7)
        reports.save_figure(fig, f"{out_dir}/regularizers.png", dpi=110)
    if not curves.empty:
        merged = common.curve_columns(frame, curves, ["noise"] + KEY)
        noises = [n for n in ("randY", "real") if n in set(merged["noise"])]
        fig, axes = reports.figure(1, len(noises), figsize=(6 * len(noises), 4.2), squeeze=False)
        for ax, noise in zip(axes[0], noises):
            part = merged[merged["noise"] == noise]
            for i, reg in enumerate(sorted(set(part["regularizer"]))):
                sub = part[part["regularizer"] == reg]
                # one curve per regularizer: its strongest value (the largest), to separate the curves as Fig 3.11 does
                top = sub[(sub["value"] == sub["value"].max())]
                top = top[top["adv_dropout"] == top["adv_dropout"].max()]
                series = top.groupby("step")["train_loss"].mean()
                name = NAMES.get(reg, reg) if reg != "none" else "no regularizer"
                value = "" if reg == "none" else f" {top['value'].iloc[0]:g}"
                ax.plot(series.index, series.values, "-", color=f"C{i}", label=f"{name}{value}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("training loss (cross-entropy)")
            ax.set_yscale("log")
            ax.set_title(f"training loss on {noise} (thesis Fig 3.11)")
            ax.legend(fontsize=6)
        reports.save_figure(fig, f"{out_dir}/curves.png", dpi=110)
    table = reports.markdown_table(["regularizer", "value", "randY final train acc (%)", "real best val acc (%)",
                                    "real final val acc (%)", "seeds"], rows)
    first = frame.iloc[0]
    adversarial = ""
    if "adversarial" in set(frame["regularizer"]):
        adversarial = (f" Adversarial training: LASS on each training batch, at most {int(first['lass_iters'])} iterations, "
                       f"stopped once one finds fewer than {int(first.get('lass_min_new', 20))} new critical points")
        if "adv_critical" in curves:
            found = common.curve_columns(frame, curves, ["noise", "regularizer"])
            found = found[found["regularizer"] == "adversarial"].groupby("noise")["adv_critical"].agg(["mean", "max"])
            adversarial += "; it found " + ", ".join(f"{100 * r['mean']:.2f}% of the {noise} training examples critical per epoch "
                                                      f"(at most {100 * r['max']:.2f}%)" for noise, r in found.iterrows())
        adversarial += "."
    return ("Each point: one regularizer at one value, mean ± std over seeds. A flat curve caps memorization of random labels "
            f"without costing validation accuracy on real data (thesis §3.5). {common.protocol(first)}{adversarial}\n\n" + table)


PIPELINE = Pipeline(
    name="memorization-regularizers",
    description="Thesis Fig 3.10/3.11: regularizers (dropout, input dropout, input/hidden noise, weight decay, dropout + "
                "adversarial training) vs memorization of random labels",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=common.load_data,
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
