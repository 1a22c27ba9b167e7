"""Thesis Fig 3.1: easy examples. Per-example misclassification after one epoch, over 100 runs, real vs randX vs randY.

Varies: noise (real; randX: every input replaced by Gaussian noise; randY:
every label redrawn uniformly), seed (initial weights and data order; 100).
The seeds of a dataset train together as stacked blocks of ``block_size``
MLPs in one trial (core.memorization.seeds), each with its own init and data
order; each seed's row keeps which training examples it misclassifies after
its last epoch (``wrong_bits``, hex of the packed bit vector).
Reports: per dataset, the per-example misclassification rate over the runs,
sorted, with the Binomial(runs, p-bar) reference of randX (p-bar its mean
rate) and its per-class variant (p-bar of each label's examples: randX nets
first learn the label prior, which alone makes examples of the favoured
class easier): real data has easy and hard examples, randX should not.
"""
from __future__ import annotations

import numpy as np

from pipelines.memorization import common
from pipelines.engine import reports
from pipelines.engine.spec import Grid, Pipeline, Setting, Stage
from tasks.memorization import NOISE, decode_bits, easy_trainable

SETTINGS = {
    **common.data_settings(n_train=1000, n_val=397),
    "noises": Setting(list(NOISE), "datasets: real, randX (100% noise inputs), randY (100% random labels)", choices=NOISE),
    "runs": Setting(100, "runs (seeds) per dataset", ge=1),
    "block_size": Setting(100, "runs trained together in one trial (stacked weights)", ge=1),
    "width": Setting(256, "hidden units per layer of the 2-layer MLP (paper: 4096)", ge=1),
    "epochs": Setting(1, "epochs per run (paper: 1)", ge=1),
    "batch_size": Setting(16, "minibatch size", ge=1),
    "lr": Setting(0.05, "SGD learning rate (paper: 0.01)", gt=0),
    "data_seed": Setting(0, "seed of the noise datasets", ge=0),
}
PRESETS = {
    "smoke": dict(runs=100, width=128),
    "paper": dict(dataset="mnist", n_train=0, n_val=1000, width=4096, batch_size=128, lr=0.01, block_size=20),
    # MNIST digits (--data-dir ../shared/data/mnist: 1000 training examples as the thesis' figure), minutes on 2 CPU cores.
    "mnist": dict(dataset="mnist", n_train=1000, n_val=1000, width=256),
}


def configs(settings: dict) -> list[dict]:
    """One trial per (dataset, block of seeds); the block lists the seeds."""
    shared = {k: settings[k] for k in ("width", "epochs", "batch_size", "lr", "data_seed")}
    runs, size = settings["runs"], settings["block_size"]
    return [dict(shared, noise=noise, fraction=1.0, block=[{"seed": s} for s in range(start, min(runs, start + size))])
            for noise in settings["noises"] for start in range(0, runs, size)]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['noise']} seed={c['seed']}"  # noqa: E731
    return [Stage("runs", easy_trainable, Grid(configs(settings)), metric="train_acc", label=label)]


def rates(group) -> np.ndarray:
    """Per-example misclassification rate over a group's runs (rows), from their ``wrong_bits``."""
    n = int(group["n_examples"].iloc[0])
    return np.stack([decode_bits(text, n) for text in group["wrong_bits"]]).mean(axis=0)


def binomial_reference(runs: int, p: float, n: int) -> np.ndarray:
    """Sorted rates of n examples whose misclassifications are Binomial(runs, p): the quantiles at (i + 0.5) / n."""
    from scipy.stats import binom

    return binom.ppf((np.arange(n) + 0.5) / n, runs, p) / runs


def binomial_per_class(runs: int, rate: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sorted rates if each example's misclassifications were Binomial(runs, p_c), p_c the mean rate of its class."""
    parts = [binomial_reference(runs, float(rate[labels == c].mean()), int((labels == c).sum())) for c in np.unique(labels)]
    return np.sort(np.concatenate(parts))


def report(frame, curves, out_dir: str) -> str:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    rows, colors = [], {"real": "C0", "randX": "C1", "randY": "C2"}
    for noise in [n for n in NOISE if n in set(frame["noise"])]:
        group = frame[frame["noise"] == noise]
        r = np.sort(rates(group))
        ax.plot(np.arange(len(r)), r, "-", color=colors[noise], label=f"{noise} ({len(group)} runs)")
        rows.append([noise, len(group), f"{100 * group['train_acc'].mean():.1f}", f"{r.mean():.3f}", f"{r.std():.3f}",
                     f"{(r <= 0.1).mean():.3f}", f"{(r >= 0.9).mean():.3f}"])
        if noise == "randX":
            ref = binomial_reference(len(group), float(r.mean()), len(r))
            ax.plot(np.arange(len(ref)), ref, "--", color="grey", label=f"Binomial({len(group)}, {r.mean():.2f})")
            rows.append([f"Binomial({len(group)}, p̄)", "", "", f"{ref.mean():.3f}", f"{ref.std():.3f}", f"{(ref <= 0.1).mean():.3f}",
                         f"{(ref >= 0.9).mean():.3f}"])
            text = group["labels"].iloc[0] if "labels" in group else None
            if isinstance(text, str) and len(text) == len(r):
                labels = np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")
                per_class = binomial_per_class(len(group), rates(group), labels)
                ax.plot(np.arange(len(per_class)), per_class, ":", color="k", label=f"Binomial({len(group)}, p̄ of the class)")
                rows.append([f"Binomial({len(group)}, p̄ per class)", "", "", f"{per_class.mean():.3f}", f"{per_class.std():.3f}",
                             f"{(per_class <= 0.1).mean():.3f}", f"{(per_class >= 0.9).mean():.3f}"])
    ax.set_xlabel("training example (sorted)")
    ax.set_ylabel("misclassification rate over runs")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Easy examples after one epoch (thesis Fig 3.1)")
    ax.legend(fontsize=8)
    common.save(fig, f"{out_dir}/easy_examples.png")
    table = reports.markdown_table(["data", "runs", "train acc (%)", "mean rate", "std of rates", "share rate <= 0.1 (easy)",
                                    "share rate >= 0.9 (hard)"], rows)
    return ("Per-example misclassification rate after one epoch, over independent runs (init and data order). "
            "A spread of rates beyond the Binomial reference means easy and hard examples.\n\n" + table)


PIPELINE = Pipeline(
    name="memorization-easy",
    description="Thesis Fig 3.1: per-example misclassification after one epoch over 100 runs, real vs randX vs randY",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=common.load_data,
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
