"""Thesis Fig 3.1: easy examples. Per-example misclassification after one epoch, over 100 runs, real vs randX vs randY.

Varies: noise (real; randX: every input replaced by Gaussian noise; randY:
every label redrawn uniformly), seed (initial weights and data order; 100).
The seeds of a dataset train together as stacked blocks of ``block_size``
MLPs in one trial (core.memorization.seeds), each with its own init and data
order; each seed's row keeps which training examples it misclassifies after
its last epoch (``wrong_bits``, hex of the packed bit vector).
Fixed (§3.2 and §3.3.1): 1,000 examples, one epoch, the MLP of 2 x 4096
units, SGD lr 0.01; the batch size (not given in the chapter) is 16.
Reports: per dataset, the per-example misclassification rate over the runs,
sorted, with the Binomial(runs, p-bar) reference of randX (p-bar its mean
rate) and, for every dataset, the per-class reference (p-bar of each label's
examples: after one epoch the nets have learned little beyond the label
prior, which alone makes the examples of a favoured class easier). The table
splits each dataset's spread of rates into its within-class and
between-class parts: real data has easy and hard examples within a class,
randX should not.
"""
from __future__ import annotations

import numpy as np

from core.memorization import hparams
from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import Grid, Pipeline, Setting, Stage
from tasks.memorization import NOISE, decode_bits, easy_trainable

SETTINGS = {
    **common.data_settings(n_train=hparams.EASY["n_train"], n_val=397),
    "noises": Setting(list(NOISE), "datasets: real, randX (100% noise inputs), randY (100% random labels)", choices=NOISE),
    "runs": Setting(hparams.EASY["runs"], f"runs (seeds) per dataset (paper: {hparams.EASY['runs']})", ge=1),
    "block_size": Setting(20, "runs trained together in one trial (stacked weights; 20 x 2 x 4096 units: 1.6 GB)", ge=1),
    "width": Setting(hparams.MLP["width"], f"hidden units per layer of the 2-layer MLP (paper: {hparams.MLP['width']})", ge=1),
    "epochs": Setting(hparams.EASY["epochs"], f"epochs per run (paper: {hparams.EASY['epochs']})", ge=1),
    "batch_size": Setting(16, "minibatch size (not given in the chapter)", ge=1),
    "lr": Setting(hparams.MLP["lr"], f"SGD learning rate (paper: {hparams.MLP['lr']:g})", gt=0),
    "data_seed": Setting(0, "seed of the noise datasets", ge=0),
}
PRESETS = {
    "smoke": dict(width=128, lr=0.05, block_size=50),
    "paper": dict(dataset="mnist", n_train=hparams.EASY["n_train"], n_val=1000),
    "mnist": dict(dataset="mnist", n_train=hparams.EASY["n_train"], n_val=1000),
}
PRESET_HELP = {
    "smoke": "embedded digits, 2 x 128 units, SGD lr 0.05 (not 4096 and 0.01: seconds, not minutes), blocks of 50 seeds",
    "paper": "Fig 3.1 as the chapter: 1,000 MNIST training images (--data-dir with the training split), 100 one-epoch runs, "
             "2 x 4096, SGD lr 0.01, batch 16",
    "mnist": "the chapter's Fig 3.1 settings on 1,000 of the 10,000 MNIST test images in ../shared/data/mnist",
}


def configs(settings: dict) -> list[dict]:
    """One trial per (dataset, block of seeds); the block lists the seeds."""
    shared = {k: settings[k] for k in ("width", "epochs", "batch_size", "lr", "data_seed")}
    runs, size = settings["runs"], settings["block_size"]
    return [dict(shared, noise=noise, fraction=1.0, block=[{"seed": s} for s in range(start, min(runs, start + size))])
            for noise in settings["noises"] for start in range(0, runs, size)]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['noise']} seed={c['seed']}"
    return [Stage("runs", easy_trainable, Grid(configs(settings)), metric="train_acc", label=label)]


def rates(group) -> np.ndarray:
    """Per-example misclassification rate over a group's runs (rows), from their ``wrong_bits``."""
    n = int(group["n_examples"].iloc[0])
    return np.stack([decode_bits(text, n) for text in group["wrong_bits"]]).mean(axis=0)


def labels_of(group, n: int) -> np.ndarray | None:
    """The training labels the group's runs were trained on (randY: the random ones), or None when not recorded."""
    text = group["labels"].iloc[0] if "labels" in group else None
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0") if isinstance(text, str) and len(text) == n else None


def binomial_reference(runs: int, p: float, n: int) -> np.ndarray:
    """Sorted rates of n examples whose misclassifications are Binomial(runs, p): the quantiles at (i + 0.5) / n."""
    from scipy.stats import binom

    return binom.ppf((np.arange(n) + 0.5) / n, runs, p) / runs


def binomial_per_class(runs: int, rate: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sorted rates if each example's misclassifications were Binomial(runs, p_c), p_c the mean rate of its class."""
    parts = [binomial_reference(runs, float(rate[labels == c].mean()), int((labels == c).sum())) for c in np.unique(labels)]
    return np.sort(np.concatenate(parts))


def spread(rate: np.ndarray, labels: np.ndarray, runs: int) -> dict:
    """The spread of per-example rates split by class: total = within + between (variances, population form), and
    the within-class std a Binomial(runs, p_c) per class would give."""
    classes = np.unique(labels)
    means = {c: rate[labels == c].mean() for c in classes}
    centred = rate - np.array([means[c] for c in labels])
    counts = np.array([(labels == c).sum() for c in classes])
    class_means = np.array([means[c] for c in classes])
    binom_var = float((counts * class_means * (1 - class_means)).sum() / len(rate) / runs)
    return {"within": float(np.sqrt((centred ** 2).mean())),
            "between": float(np.sqrt((counts * (class_means - rate.mean()) ** 2).sum() / len(rate))),
            "binomial_within": float(np.sqrt(binom_var))}


def report(frame, curves, out_dir: str) -> str:
    fig, ax = reports.figure(figsize=(6.5, 4.5))
    rows, colors = [], {"real": "C0", "randX": "C1", "randY": "C2"}
    for noise in [n for n in NOISE if n in set(frame["noise"])]:
        group = frame[frame["noise"] == noise]
        raw = rates(group)
        r = np.sort(raw)
        labels = labels_of(group, len(raw))
        ax.plot(np.arange(len(r)), r, "-", color=colors[noise], label=f"{noise} ({len(group)} runs)")
        parts = spread(raw, labels, len(group)) if labels is not None else None
        cells = [f"{parts[k]:.3f}" for k in ("within", "binomial_within", "between")] if parts else ["-", "-", "-"]
        rows.append([noise, len(group), reports.pm(*reports.mean_std(100 * group["train_acc"])), f"{r.mean():.3f}", f"{r.std():.3f}",
                     *cells, f"{(r <= 0.1).mean():.3f}", f"{(r >= 0.9).mean():.3f}"])
        if labels is not None:
            per_class = binomial_per_class(len(group), raw, labels)
            ax.plot(np.arange(len(per_class)), per_class, ":", color=colors[noise], lw=1,
                    label=f"Binomial({len(group)}, p̄ of the class), {noise}")
        if noise == "randX":
            ref = binomial_reference(len(group), float(r.mean()), len(r))
            ax.plot(np.arange(len(ref)), ref, "--", color="grey", label=f"Binomial({len(group)}, {r.mean():.2f})")
            rows.append([f"Binomial({len(group)}, p̄ of randX)", "", "", f"{ref.mean():.3f}", f"{ref.std():.3f}", "", "", "",
                         f"{(ref <= 0.1).mean():.3f}", f"{(ref >= 0.9).mean():.3f}"])
    ax.set_xlabel("training example (sorted)")
    ax.set_ylabel("misclassification rate over runs")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Easy examples after one epoch (thesis Fig 3.1)")
    ax.legend(fontsize=7)
    reports.save_figure(fig, f"{out_dir}/easy_examples.png", dpi=110)
    table = reports.markdown_table(["data", "runs", "train acc (%)", "mean rate", "std of rates", "within-class std",
                                    "within-class std if Binomial per class", "between-class std", "share rate <= 0.1 (easy)",
                                    "share rate >= 0.9 (hard)"], rows)
    expected = {"epochs": 1, "width": 4096}
    return ("Per-example misclassification rate after one epoch, over independent runs (init and data order), classes by "
            "the labels trained on (randY: the random ones). A within-class spread beyond the per-class Binomial means "
            "easy and hard examples within a class; the between-class part is the label prior the nets pick up first. "
            f"{common.protocol(frame.iloc[0], expected)}\n\n" + table)


PIPELINE = Pipeline(
    name="memorization-easy",
    description="Thesis Fig 3.1: per-example misclassification after one epoch over 100 runs, real vs randX vs randY",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=common.load_data,
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
