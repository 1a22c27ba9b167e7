"""IRM's random hyperparameter search on Colored MNIST, as an Optuna study.

Varies (IRM code): hidden = int(2^U(6, 9)), l2 = 10^U(-5, -2),
lr = 10^U(-3.5, -2.5), anneal = randint(50, 250), penalty = 10^U(2, 6).
The space is core.cmnist.hparams.random_space. Fixed: method, steps, data
seed. Selects on min(train-domain accuracies, test accuracy) (``min_acc``).
The study lives in the results' Optuna database; re-running the same command
resumes it. With the random sampler, configuration i is the i-th draw of a
seeded stream (and model seed i), so a search is reproducible draw by draw.
"""
from __future__ import annotations

from core import methods
from core.cmnist import hparams
from core.cmnist.sources import MIN_EMBEDDED_IMAGES
from pipelines.engine import reports
from pipelines.rex.common import (
    EMBEDDED_SETTINGS, HOLDOUT_SETTING, RETRAIN_SETTINGS, holdout_keys, load_images, reduction_keys, retrain_stage, retrain_table,
    risk_reduction_setting, validation_table,
)
from pipelines.engine.spec import Pipeline, Search, Setting, Stage
from tasks.cmnist import cmnist_trainable

SETTINGS = {
    "method": Setting("irm", "the method searched", choices=tuple(methods.METHODS)),
    "num_samples": Setting(8, "configurations to try (the study's budget)", ge=1),
    "sampler": Setting("random", "Optuna sampler: random (IRM code's search) or tpe", choices=("random", "tpe")),
    "block_size": Setting(1, "configurations trained together in one Tune trial", ge=1),
    "steps": Setting(101, "full-batch Adam steps per configuration", ge=1),
    "eval_every": Setting(50, "steps between evaluations", ge=1),
    "data_seed": Setting(0, "seed of the domain construction (label noise, colours)", ge=0),
    "seed": Setting(0, "seed of the sampler", ge=0),
    "risk_reduction": risk_reduction_setting(),
    "holdout": HOLDOUT_SETTING,
    **RETRAIN_SETTINGS,
    **EMBEDDED_SETTINGS,
}
PRESETS = {
    "smoke": dict(embedded_images=MIN_EMBEDDED_IMAGES),  # each embedded source digit drawn once: under a minute
    "paper": dict(num_samples=hparams.SEARCH_SAMPLES, steps=hparams.STEPS),
}


def stages(settings: dict) -> list[Stage]:
    """One stage: the Optuna study over IRM's random-search space, selected on min_acc."""
    fixed = dict(
        method=settings["method"], steps=settings["steps"], eval_every=settings["eval_every"],
        data_seed=settings["data_seed"], variant="standard", **reduction_keys(settings["method"], settings["risk_reduction"]),
        **holdout_keys(settings),
    )
    search = Search(
        studies=[fixed], space=hparams.random_space, budget=settings["num_samples"],
        block_size=settings["block_size"], sampler=settings["sampler"], seed=settings["seed"],
    )
    label = lambda c: f"{c['method']} h={c['hidden']} pw={float(c['penalty_weight']):.3g}"
    search_stage = Stage("search", cmnist_trainable, search, metric="min_acc", mode="max", label=label)
    return [search_stage, *retrain_stage(settings, cmnist_trainable, "min_acc", label)]


def report(frame, curves, out_dir: str) -> str:
    """The best configurations by min_acc, how many beat chance on the test domain, and the re-trained best ones."""
    retrain = frame[frame["stage"] == "retrain"] if "stage" in frame else frame.iloc[0:0]
    frame = frame[frame["stage"] == "search"] if "stage" in frame else frame
    frame = frame.sort_values("min_acc", ascending=False)
    columns = ["hidden", "l2", "lr", "anneal_iters", "penalty_weight", "train_acc", "test_acc", "min_acc"]
    rows = [[f"{row[c]:.4g}" for c in columns] for _, row in frame.head(10).iterrows()]
    above = int((frame["test_acc"] > 0.5).sum())
    _scatter(frame, f"{out_dir}/search.png")
    text = (
        f"{len(frame)} configurations; {above} ({100 * above / max(1, len(frame)):.1f}%) beat chance (test acc > 50%).\n\n"
        + reports.markdown_table(columns, rows)
    )
    validation = validation_table(frame, curves)
    if validation:
        text += "\n## Selection rules\n\n" + validation
    if len(retrain):
        text += "\n## The best configurations re-trained with new seeds and domains\n\n" + retrain_table(retrain, frame, _describe)
    return text


def _describe(row) -> str:
    return f"h={int(row['hidden'])} l2={row['l2']:.2g} lr={row['lr']:.2g} anneal={int(row['anneal_iters'])} pw={row['penalty_weight']:.3g}"


def _scatter(frame, path: str) -> None:
    fig, ax = reports.figure(figsize=(5, 4))
    points = ax.scatter(100 * frame["train_acc"], 100 * frame["test_acc"], c=frame["penalty_weight"].astype(float), cmap="viridis", norm="log")
    fig.colorbar(points, label="penalty weight")
    ax.axhline(50, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("train accuracy (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Colored MNIST random search")
    reports.save_figure(fig, path)


PIPELINE = Pipeline(
    name="cmnist-search",
    description="IRM's random (or TPE) hyperparameter search on Colored MNIST as a resumable Optuna study",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=load_images,
    stages=stages,
    report=report,
)
