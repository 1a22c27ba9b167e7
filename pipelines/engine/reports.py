"""Report helpers shared by pipelines: summary statistics, markdown tables, PNG figures.

Reports read only Parquet results (via :class:`pipelines.engine.store.ResultStore`),
so they work on results copied off a cluster.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def mean_std(values) -> tuple[float, float]:
    """Mean and population standard deviation (as the reference code's np.std)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std())


def mean_sem(values) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for one value)."""
    array = np.asarray(values, dtype=float)
    sem = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else 0.0
    return float(array.mean()), sem


def pm(mean: float, spread: float, digits: int = 1) -> str:
    """``mean ± spread`` rounded to ``digits``."""
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figure(*args, **kwargs):
    """``(fig, axes)`` of ``matplotlib.pyplot.subplots(*args, **kwargs)``, drawn by the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Lay ``fig`` out tightly, write it to ``path`` (parent folders made) and close it."""
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def bar_figure(rows, path: str, title: str) -> None:
    """Grouped bars of ours vs paper train/test accuracy; rows = (name, ours_train, ours_test, paper_train, paper_test)."""
    fig, ax = figure(figsize=(9, 4.5))
    x = np.arange(len(rows))
    series = [("train (ours)", 1, "#4c72b0", None), ("test (ours)", 2, "#dd8452", None), ("train (paper)", 3, "#4c72b0", "//"), ("test (paper)", 4, "#dd8452", "//")]
    for i, (label, index, color, hatch) in enumerate(series):
        means = [row[index][0] for row in rows]
        errs = [row[index][1] for row in rows]
        ax.bar(x + (i - 1.5) * 0.2, means, 0.2, yerr=errs, label=label, color=color, alpha=0.5 if hatch else 0.9, hatch=hatch, capsize=2)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.axhline(75, color="green", lw=0.8, ls=":")
    ax.set_xticks(x, [row[0] for row in rows])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(ncol=4, fontsize=8, loc="upper center")
    save_figure(fig, path)


def curves_figure(curves, group: str, metrics: list[str], path: str, title: str) -> None:
    """Mean (over trials) of each metric vs step, one line per value of ``group``, one panel per metric."""
    fig, axes = figure(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, frame in curves.groupby(group):
            series = frame.groupby("step")[metric].mean()
            ax.plot(series.index, series.values, label=str(name))
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)
