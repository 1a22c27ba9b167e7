"""BHN classification (B2; docs bayes.md §d.6): test error, NLL and calibration (ECE) against training-set size.

Varies: training-set size (``labels``: the first n of the shuffled training part), model (map, mcdropout, bhn with
its posterior: mean-field = coupling 0, realnvp / iaf / dsf with ``coupling`` layers), seed.
Fixed (B2, experiment_MLP_WN.py defaults): one hidden layer of 200 weight-normed ReLU units, batch 32, Adam,
data-dependent init, best-valid checkpoint on 20-sample validation accuracy, MC-averaged test predictive
(``test_samples``; the reference: 200). Data: smoke / cpu the MNIST test split from --data-dir (7k/1k/2k) or the
embedded deformed digits without it; paper: MNIST 50k/10k/10k (``gensweep download mnist DIR``).
Metrics: ``test_acc``, ``test_err`` (%), ``test_nll`` (nats), ``ece`` (15 bins), ``best_epoch``.
Report: error / NLL / ECE per (model, size), the done-when checks of §d.6, a figure against size. The BHN paper's
numbers are not available offline ("published: not entered").
"""
from __future__ import annotations

import numpy as np

from core.bhn import hparams
from pipelines.bhn import common
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from tasks.bhn import classify_trainable, load_images

B2 = hparams.B2_MLP  # experiment_MLP_WN.py's defaults [C]

SETTINGS = {
    "labels": Setting([500, 2000], "training-set sizes (list; each the first n of the shuffled training part)", ge=10, item=int),
    **common.model_settings(B2["hidden"], B2["activation"], ["map", "mcdropout", "bhn"], ["mean-field", "realnvp"], [4]),
    "seeds": Setting(1, "seeds per (model, size)", ge=1),
    "epochs": Setting(B2["epochs"], f"training epochs (experiment_MLP_WN.py: {B2['epochs']}; its IAF launcher: 200)", ge=1),
    "lr": Setting(B2["lr"], f"Adam learning rate (experiment_MLP_WN.py: {B2['lr']:g}; its launcher: 1e-3 and 1e-4)", gt=0),
    "batch": Setting(B2["batch"], f"minibatch (reference: {B2['batch']})", ge=1),
    "anneal": Setting(B2["anneal"], "anneal the KL weight min(1, 0.001 + e / (epochs / 2)) (reference anneal: 0)"),
    "valid_samples": Setting(B2["valid_samples"], "MC samples of the validation accuracy that picks the checkpoint (reference: "
                             f"{B2['valid_samples']})", ge=1),
    "test_samples": Setting(50, f"MC samples of the test predictive (reference: {B2['test_samples']})", ge=1),
    **common.split_settings(7000, 1000, 2000),
}
PAPER_LABELS = [100, 500, 1000, 2000, 5000, 10_000, 50_000]
PRESETS = {
    "smoke": dict(lr=1e-3),
    "cpu": dict(labels=[100, 1000, 7000], lr=1e-3, posteriors=["mean-field", "realnvp", "iaf"], seeds=3, epochs=100, test_samples=100),
    "paper": dict(labels=PAPER_LABELS, posteriors=["mean-field", "realnvp", "iaf"], coupling=[4, 8], seeds=3, epochs=200,
                  test_samples=B2["test_samples"], n_train=50_000, n_valid=10_000, n_test=10_000),
}
PRESET_HELP = {
    "smoke": "sizes {500, 2000} x {map, mcdropout, bhn mean-field, bhn realnvp x4}, 10 epochs, Adam 1e-3, 1 seed, 50 MC samples; "
             "MNIST test split (--data-dir) or embedded digits: runs, no claim",
    "cpu": "MNIST test split 7k/1k/2k, sizes {100, 1000, 7000} x {map, mcdropout, bhn mean-field / realnvp / iaf}, 100 epochs "
           "(the IAF launcher: 200), 3 seeds, Adam 1e-3 (the launcher's grid: 1e-3, 1e-4), 100 MC samples at test (reference 200)",
    "paper": "MNIST 50k/10k/10k (--data-dir), sizes 100-50,000, coupling {4, 8}, 200 epochs, 200 MC samples (the MLP; "
             "the CIFAR CNN is not built)",
}
TRAIN_KEYS = ("epochs", "lr", "batch", "anneal", "valid_samples", "test_samples", "n_train", "n_valid", "n_test", "split_seed")


def check(settings: dict) -> None:
    common.check_variants(settings)
    if max(settings["labels"]) > settings["n_train"]:
        raise GensweepError(f"bad value for labels: {max(settings['labels'])} (larger than the training part, n_train {settings['n_train']})")


def configs(settings: dict) -> list[dict]:
    shared = dict(common.model_keys(settings), **{k: settings[k] for k in TRAIN_KEYS})
    return [dict(shared, **variant, labels=n, seed=seed)
            for variant in common.variants(settings) for n in settings["labels"] for seed in range(settings["seeds"])]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{common.variant_label(c)} n={c['labels']} seed={c['seed']}"
    return [Stage("fits", classify_trainable, Grid(configs(settings)), metric="test_nll", mode="min", label=label)]


# ------------------------------------------------------------------------------------------- report


def with_labels(frame):
    return frame.assign(variant=[common.variant_label(r) for r in frame.to_dict("records")])


def checks(frame) -> list[str]:
    """§d.6's done-when, per bhn variant: NLL below map's at every size; error ≤ map's at the two smallest sizes;
    error within 0.5 points of mcdropout's at the largest (means over seeds)."""
    frame = with_labels(frame)
    mean = frame.groupby(["variant", "labels"])[["test_err", "test_nll"]].mean()
    variants = sorted(set(frame["variant"]), key=common.variant_order)
    sizes = sorted(set(frame["labels"]))
    lines = []
    if "map" not in variants:
        return ["- no map rows: the checks compare against map"]
    for v in [v for v in variants if v.startswith("bhn")]:
        nll = [(n, mean.loc[(v, n), "test_nll"], mean.loc[("map", n), "test_nll"]) for n in sizes
               if (v, n) in mean.index and ("map", n) in mean.index]
        ok = all(a < b for _, a, b in nll)
        lines.append(f"- {v}: test NLL below map's at every size: " + ", ".join(f"n={n} {a:.3f} vs {b:.3f}" for n, a, b in nll)
                     + f" → {'yes' if ok and nll else 'no'}")
        small = [(n, mean.loc[(v, n), "test_err"], mean.loc[("map", n), "test_err"]) for n in sizes[:2]
                 if (v, n) in mean.index and ("map", n) in mean.index]
        ok = all(a <= b for _, a, b in small)
        lines.append(f"- {v}: test error ≤ map's at the smallest sizes: " + ", ".join(f"n={n} {a:.2f} vs {b:.2f} %" for n, a, b in small)
                     + f" → {'yes' if ok and small else 'no'}")
        top = sizes[-1]
        if (v, top) in mean.index and ("mcdropout", top) in mean.index:
            a, b = mean.loc[(v, top), "test_err"], mean.loc[("mcdropout", top), "test_err"]
            lines.append(f"- {v}: test error within 0.5 points of mcdropout's at n={top}: {a:.2f} vs {b:.2f} % → "
                         f"{'yes' if a - b <= 0.5 else 'no'}")
    return lines


def size_figure(frame, path: str) -> None:
    """Test error, NLL and ECE against training-set size, one line per model (mean ± s.e. band over seeds)."""
    frame = with_labels(frame)
    metrics = [("test_err", "test error (%)"), ("test_nll", "test NLL (nats)"), ("ece", "ECE (15 bins)")]
    fig, axes = reports.figure(1, 3, figsize=(13, 3.8), squeeze=False)
    for ax, (metric, name) in zip(axes[0], metrics):
        for v in sorted(set(frame["variant"]), key=common.variant_order):
            g = frame[frame["variant"] == v]
            sizes = sorted(set(g["labels"]))
            stats = [reports.mean_sem(g[g["labels"] == n][metric]) for n in sizes]
            m, s = np.array([a for a, _ in stats]), np.array([b for _, b in stats])
            ax.plot(sizes, m, marker="o", label=v)
            ax.fill_between(sizes, m - s, m + s, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("training-set size")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("bhn-classify: mean ± s.e. over seeds")
    reports.save_figure(fig, path)


def report(frame, curves, out_dir: str) -> str:
    frame = with_labels(frame)
    rows = []
    for (v, n), g in sorted(frame.groupby(["variant", "labels"]), key=lambda kv: (common.variant_order(kv[0][0]), kv[0][1])):
        rows.append([v, int(n), common.cell(list(g["test_err"]), 2), common.cell(list(g["test_nll"]), 3), common.cell(list(g["ece"]), 3),
                     f"{g['best_epoch'].mean():.1f}", len(g), common.NOT_ENTERED])
    table = reports.markdown_table(["model", "training size", "test error (%)", "test NLL (nats)", "ECE", "best epoch", "seeds",
                                    "published (BHN paper [–])"], rows)
    size_figure(frame, f"{out_dir}/bhn_classify_sizes.png")
    return ("Test error, NLL of the MC-averaged predictive and ECE (15 equal-width confidence bins) of the best-valid "
            "checkpoint, mean ± s.e. over seeds. The BHN paper's MNIST error-vs-size numbers are figures only, not "
            "available offline: published: not entered.\n\n" + table
            + "\nChecks of bayes.md §d.6 (means over seeds):\n\n" + "\n".join(checks(frame))
            + "\n\n![error, NLL and ECE against size](bhn_classify_sizes.png)\n")


PIPELINE = Pipeline(
    name="bhn-classify",
    description="BHN B2: test error, NLL and ECE against training-set size for map, MC dropout, mean-field and flow BHNs",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=load_images,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
