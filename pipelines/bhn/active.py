"""BHN active learning on MNIST (B3; docs bayes.md §d.7): the reference's loop (dk_AL.py, AL_helpers.py).

Varies: model (bhn realnvp ×4 = the reference's hyperCNN posterior; mcdropout; map, deterministic, so BALD and mean
std are skipped for it and its var_ratio is 1 − max softmax), acquisition (bald, max_ent, var_ratio, mean_std,
random), seed; settings ``params_reset`` (none = warm start, the reference's default; random = a fresh init per
acquisition) and ``pool`` (remove: acquired images leave the pool; reference: the references' quirk, the scored
subset re-appended, acquired images stay acquirable).
Fixed (B3): 2 labels per class to start (the first of each class in a candidate set), ``acquire`` (10) images per
acquisition, a random scored ``subset`` (2,000) of the pool, ``mc_samples`` (100) MC passes, ``epochs`` (50) of
Adam 1e-3, batch 128, after every acquisition; test accuracy after each (no validation: the reference's loop has
no early stopping). Smoke / cpu: the MNIST test split as pool / test (8k/2k) with an MLP; paper: MNIST 50k and the
reference's CNN (hours per run: GPU).
Metrics: the curve (``curve``: [[labels, test accuracy], ...], a Report per acquisition with step = labels),
``test_acc`` at the end, ``mean_acc_100_500`` (mean accuracy over the acquisitions with 100-500 labels), ``auc``
(mean accuracy over the whole curve), ``labels_to_90`` / ``labels_to_95`` (NaN: never reached).
"""
from __future__ import annotations

import json

import numpy as np

from core.bhn import active as bactive
from core.bhn import hparams
from pipelines.bhn import common
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from tasks.bhn import active_trainable, load_images

ACQUISITIONS = tuple(bactive.ACQUISITIONS)
NEEDS_SAMPLES = ("bald", "mean_std")  # zero on a deterministic model's copies: not run for map

B3 = hparams.B3_ACTIVE  # dk_AL.py / AL_helpers.py / launch5-6_dk_AL.py [C]

SETTINGS = {
    **common.model_settings((200,), "relu", ["bhn", "mcdropout"], ["realnvp"], [B3["coupling"]]),
    "acquisitions": Setting(["bald", "random"], "acquisition functions (bald in bits, max_ent, var_ratio, mean_std, random)",
                            choices=ACQUISITIONS),
    "seeds": Setting(1, "seeds per (model, acquisition) (reference: 3 experiments)", ge=1),
    "steps": Setting(5, f"acquisitions (reference: {B3['acquisitions']}, to {B3['max_labels']:,} labels)", ge=1),
    "acquire": Setting(B3["per_acquisition"], f"images labelled per acquisition (reference Queries: {B3['per_acquisition']})", ge=1),
    "subset": Setting(500, f"pool images scored per acquisition (reference: {B3['pool_subset']:,})", ge=1),
    "initial_per_class": Setting(B3["initial_per_class"], f"initial labels per class (reference: {B3['initial_per_class']})", ge=1),
    "candidates": Setting(1000, "shuffled training images the initial set is picked from, the rest are the pool (reference: "
                          "10,000 of 50,000)", ge=10),
    "mc_samples": Setting(20, f"MC passes of the acquisition scores (reference bh_iterations: {B3['mc_samples']})", ge=1),
    "epochs": Setting(B3["epochs"], f"epochs after each acquisition (reference: {B3['epochs']})", ge=1),
    "lr": Setting(B3["lr"], f"Adam learning rate (reference: {B3['lr']:g})", gt=0),
    "batch": Setting(B3["batch"], f"minibatch (reference: {B3['batch']})", ge=1),
    "anneal": Setting(False, "anneal bhn's KL weight"),
    "params_reset": Setting("none", "none: warm start (reference default); random: a fresh init after each acquisition",
                            choices=("none", "random")),
    "pool": Setting("remove", "remove: acquired images leave the pool; reference: the references' growing pool (quirk)",
                    choices=tuple(bactive.POOL_SEMANTICS)),
    "image_size": Setting(14, "image side: 28, or 14 (2x2 average pooling, a smaller first layer)", choices=(14, 28)),
    "test_samples": Setting(20, "MC samples of the test predictive after each acquisition", ge=1),
    "n_train": Setting(8000, "candidate + pool images (the MNIST test split's first part)", ge=20),
    "n_test": Setting(2000, "test images", ge=1),
    "split_seed": Setting(0, "seed of the shuffle before the split", ge=0),
    "arch": Setting("mlp", f"primary net: mlp (hidden x layers), or cnn, the reference's active-learning net ({B3['cnn']}; "
                    "hidden and layers unused)", choices=("mlp", "cnn"), opt_in=True),
}
PRESETS = {
    "smoke": {},
    "cpu": dict(models=["bhn", "mcdropout", "map"], acquisitions=["bald", "max_ent", "var_ratio", "random"], seeds=3, steps=48,
                subset=B3["pool_subset"], mc_samples=50, image_size=28),
    "paper": dict(models=["bhn", "mcdropout", "map"], acquisitions=list(ACQUISITIONS), seeds=3, steps=B3["acquisitions"],
                  subset=B3["pool_subset"], mc_samples=B3["mc_samples"], image_size=28, candidates=B3["candidate_initial"],
                  n_train=B3["train_split"], n_test=10_000, arch=B3["arch"], test_samples=100),
}
PRESET_HELP = {
    "smoke": "MNIST test split (--data-dir) or embedded digits as pool / test 8k/2k, 14x14 MLP 196-200-10, 5 acquisitions of 10, "
             "subset 500, 20 MC samples, {bhn realnvp x4, mcdropout} x {bald, random}, 1 seed: runs, no claim",
    "cpu": "pool / test 8k/2k, 28x28 MLP 784-200-10 (WN), 48 acquisitions (to 500 labels), subset 2,000, 50 MC samples, "
           "{bhn, mcdropout} x {bald, max_ent, var_ratio, random} + map x {max_ent, var_ratio, random}, 3 seeds",
    "paper": "MNIST 50k (--data-dir), 98 acquisitions, 100 MC samples, all acquisitions, 3 seeds, the reference's CNN "
             "(arch=cnn): hours per run, GPU",
}
TRAIN_KEYS = ("steps", "acquire", "subset", "initial_per_class", "candidates", "mc_samples", "epochs", "lr", "batch", "anneal",
              "params_reset", "pool", "image_size", "test_samples", "n_train", "n_test", "split_seed")


def check(settings: dict) -> None:
    """The acquisition fits the pool: acquire <= subset <= the pool at every step (under remove the pool shrinks)."""
    common.check_variants(settings)
    pool = settings["n_train"] - settings["candidates"]
    if pool < 1:
        raise GensweepError(f"bad value for candidates: {settings['candidates']} (leaves no pool of the {settings['n_train']} images)")
    if settings["acquire"] > min(settings["subset"], pool):
        raise GensweepError(f"bad value for acquire: {settings['acquire']} (larger than the pool: scored subset {settings['subset']}, "
                            f"pool {pool})")
    last = pool - (settings["steps"] - 1) * settings["acquire"] if settings["pool"] == "remove" else pool
    if settings["subset"] > last:
        raise GensweepError(f"bad value for subset: {settings['subset']} (larger than the pool of {last} images left before the "
                            f"last acquisition; lower subset, acquire or steps)")
    if settings["initial_per_class"] * 10 > settings["candidates"]:
        raise GensweepError(f"bad value for initial_per_class: {settings['initial_per_class']} (more than the {settings['candidates']} candidates)")


def runs(settings: dict) -> list[tuple[dict, str]]:
    """(variant, acquisition) pairs: a deterministic model gets no BALD / mean std."""
    return [(v, a) for v in common.variants(settings) for a in settings["acquisitions"]
            if not (v["model"] in common.DETERMINISTIC and a in NEEDS_SAMPLES)]


def configs(settings: dict) -> list[dict]:
    shared = dict(common.model_keys(settings), **{k: settings[k] for k in TRAIN_KEYS})
    if settings["arch"] != "mlp":  # enters a config only when set (the mlp sweeps' trial keys stay)
        shared["arch"] = settings["arch"]
    return [dict(shared, **variant, acquisition=a, seed=seed) for variant, a in runs(settings) for seed in range(settings["seeds"])]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{common.variant_label(c)} {c['acquisition']} seed={c['seed']}"
    return [Stage("loops", active_trainable, Grid(configs(settings)), metric="mean_acc_100_500", mode="max", label=label)]


# ------------------------------------------------------------------------------------------- report


def curves_of(frame) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(variant, acquisition) -> (labels, accuracies (seeds, points)) from each row's ``curve``."""
    out: dict = {}
    for r in frame.to_dict("records"):
        points = np.asarray(json.loads(r["curve"]), dtype=float)
        out.setdefault((common.variant_label(r), r["acquisition"]), []).append(points)
    result = {}
    for key, runs_ in out.items():
        n = min(len(p) for p in runs_)
        result[key] = (runs_[0][:n, 0], np.stack([p[:n, 1] for p in runs_]))
    return result


def anchor_points() -> list[tuple[int, float]]:
    """Gal et al.'s MC-dropout BALD curve, read from a figure (core.bhn.hparams; [V, ±1 point])."""
    return sorted(hparams.AL_MCDROPOUT_BALD.items())


def curve_figure(frame, path: str) -> None:
    """Test accuracy against labels, one panel per model, one line per acquisition (mean ± s.e. band over seeds)."""
    curves = curves_of(frame)
    variants = sorted({v for v, _ in curves}, key=common.variant_order)
    fig, axes = reports.figure(1, len(variants), figsize=(4.6 * len(variants), 3.8), squeeze=False)
    anchor = anchor_points()
    for ax, v in zip(axes[0], variants):
        for a in [a for a in ACQUISITIONS if (v, a) in curves]:
            labels, acc = curves[(v, a)]
            mean = 100 * acc.mean(0)
            se = 100 * acc.std(0, ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else np.zeros_like(mean)
            color = f"C{ACQUISITIONS.index(a)}"  # one colour per acquisition in every panel
            ax.plot(labels, mean, label=a, color=color)
            ax.fill_between(labels, mean - se, mean + se, alpha=0.2, color=color)
        top = max(labels.max() for (v2, _), (labels, _) in curves.items() if v2 == v)
        shown = [(n, a) for n, a in anchor if n <= top]  # the anchor only where our curve reaches
        if shown:
            ax.plot(*zip(*shown), "k*", ls="", label="Gal et al. MC dropout BALD [V, figure]")
        ax.set_title(v)
        ax.set_xlabel("labelled images")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    reports.save_figure(fig, path)


def checks(frame) -> list[str]:
    """§d.7's done-when: BALD beats random by >= 2 points of mean accuracy over 100-500 labels (s.e. bands apart) for
    bhn and mcdropout; bhn-BALD within 1 point of mcdropout-BALD."""
    frame = frame.assign(variant=[common.variant_label(r) for r in frame.to_dict("records")])
    stats = {k: reports.mean_sem(100 * g["mean_acc_100_500"]) for k, g in frame.groupby(["variant", "acquisition"])
             if g["mean_acc_100_500"].notna().all()}
    lines = []
    for v in sorted({v for v, _ in stats}, key=common.variant_order):
        if (v, "bald") in stats and (v, "random") in stats:
            (b, bs), (r, rs) = stats[(v, "bald")], stats[(v, "random")]
            apart = b - bs > r + rs
            lines.append(f"- {v}: BALD {b:.2f} ± {bs:.2f} vs random {r:.2f} ± {rs:.2f} (mean accuracy over 100-500 labels): "
                         f"{b - r:+.2f} points, bands {'apart' if apart else 'overlap'} → {'yes' if b - r >= 2 and apart else 'no'}")
    bhn = [v for v in sorted({v for v, _ in stats}) if v.startswith("bhn") and (v, "bald") in stats]
    for v in bhn:
        if ("mcdropout", "bald") in stats:
            gap = stats[(v, "bald")][0] - stats[("mcdropout", "bald")][0]
            lines.append(f"- {v} BALD vs mcdropout BALD: {gap:+.2f} points → {'within 1 point' if abs(gap) <= 1 else 'more than 1 point apart'}")
    if not lines and frame["acquisition"].isin(["bald"]).any() and frame["mean_acc_100_500"].isna().all():
        return [f"- no curve reaches 100 labels (at most {int(frame['labels'].max())}): the 100-500-label checks need the cpu preset"]
    return lines or ["- no BALD / random pairs: nothing to check"]


def fmt_labels(values) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "never"
    return f"{np.mean(finite):.0f}" + (f" ({len(finite)}/{len(values)} seeds)" if len(finite) < len(values) else "")


def report(frame, curves, out_dir: str) -> str:
    frame = frame.assign(variant=[common.variant_label(r) for r in frame.to_dict("records")])
    rows = []
    keys = sorted(frame.groupby(["variant", "acquisition"]).groups, key=lambda k: (common.variant_order(k[0]), ACQUISITIONS.index(k[1])))
    for v, a in keys:
        g = frame[(frame["variant"] == v) & (frame["acquisition"] == a)]
        rows.append([v, a, common.cell(list(100 * g["test_acc"]), 2), int(g["labels"].max()), common.cell(list(100 * g["mean_acc_100_500"]), 2),
                     common.cell(list(100 * g["auc"]), 2), fmt_labels(list(g["labels_to_90"])), fmt_labels(list(g["labels_to_95"])), len(g)])
    table = reports.markdown_table(["model", "acquisition", "final test accuracy (%)", "labels", "mean accuracy 100-500 labels (%)",
                                    "mean accuracy over the curve (%)", "labels to 90 %", "labels to 95 %", "seeds"], rows)
    curve_figure(frame, f"{out_dir}/bhn_active_curves.png")
    pool, reset = sorted(set(frame["pool"])), sorted(set(frame["params_reset"]))
    anchor = ", ".join(f"{k}: {v:.1f} %" for k, v in anchor_points()) or "not entered"
    return (f"Test accuracy of the MC predictive after each acquisition, mean ± s.e. over seeds; pool semantics {', '.join(pool)}, "
            f"params_reset {', '.join(reset)}. Anchor (Gal et al.'s MC-dropout CNN, BALD, 10 per acquisition, MNIST 40k pool; "
            f"[V] read from a figure, ±1 point): {anchor}. The BHN paper's curves: published: not entered [–].\n\n" + table
            + "\nChecks of bayes.md §d.7:\n\n" + "\n".join(checks(frame))
            + "\n\n![accuracy against labels](bhn_active_curves.png)\n")


PIPELINE = Pipeline(
    name="bhn-active",
    description="BHN B3: active learning on MNIST (BALD, max entropy, variation ratio, mean std, random) for BHN, MC dropout, map",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=load_images,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
