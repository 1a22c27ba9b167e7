"""IRM's random hyperparameter search on Colored MNIST, as an Optuna study.

Varies (IRM code): hidden = int(2^U(6, 9)), l2 = 10^U(-5, -2),
lr = 10^U(-3.5, -2.5), anneal = randint(50, 250), penalty = 10^U(2, 6).
Fixed: method, steps, data seed. Selects on min(train-domain accuracies,
test accuracy) (``min_acc``). The study lives in the results' Optuna
database; re-running the same command resumes it.
"""
from __future__ import annotations

from pipelines import reports
from pipelines.spec import GensweepError, Pipeline, Search
from tasks.cmnist import cmnist_trainable


def irm_space(trial) -> dict:
    """IRM's random-search space (define-by-run); returns the derived integer hidden size."""
    log2_hidden = trial.suggest_float("log2_hidden", 6.0, 9.0)
    trial.suggest_float("l2", 1e-5, 1e-2, log=True)
    trial.suggest_float("lr", 10**-3.5, 10**-2.5, log=True)
    trial.suggest_int("anneal_iters", 50, 249)
    trial.suggest_float("penalty_weight", 1e2, 1e6, log=True)
    return {"hidden": int(2**log2_hidden)}


COMMON = dict(method="irm", sampler="random", data_seed=0, seed=0, cpus_per_trial=1, gpus_per_trial=0.25, max_failures=2)
PRESETS = {
    "smoke": dict(COMMON, num_samples=8, steps=101, eval_every=50),
    "paper": dict(COMMON, num_samples=340, steps=501, eval_every=50),
}


def search(settings: dict) -> Search:
    """The Optuna search for these settings."""
    if settings["sampler"] not in ("random", "tpe"):
        raise GensweepError(f"unknown sampler {settings['sampler']!r} (choose from random, tpe)")
    fixed = dict(
        method=settings["method"], steps=settings["steps"], eval_every=settings["eval_every"],
        data_seed=settings["data_seed"], seed=settings["seed"], variant="standard",
    )
    return Search(
        space=irm_space, fixed=fixed, num_samples=settings["num_samples"], metric="min_acc", mode="max",
        sampler=settings["sampler"], seed=settings["seed"],
    )


def report(frame, curves, out_dir: str) -> str:
    """The best configurations by min_acc, and how many beat chance on the test domain."""
    frame = frame.sort_values("min_acc", ascending=False)
    columns = ["hidden", "l2", "lr", "anneal_iters", "penalty_weight", "train_acc", "test_acc", "min_acc"]
    rows = [[f"{row[c]:.4g}" for c in columns] for _, row in frame.head(10).iterrows()]
    above = int((frame["test_acc"] > 0.5).sum())
    _scatter(frame, f"{out_dir}/search.png")
    return (
        f"{len(frame)} configurations; {above} ({100 * above / max(1, len(frame)):.1f}%) beat chance (test acc > 50%).\n\n"
        + reports.markdown_table(columns, rows)
    )


def _scatter(frame, path: str) -> None:
    plt = reports._pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    points = ax.scatter(100 * frame["train_acc"], 100 * frame["test_acc"], c=frame["penalty_weight"].astype(float), cmap="viridis", norm="log")
    fig.colorbar(points, label="penalty weight")
    ax.axhline(50, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("train accuracy (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Colored MNIST random search")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PIPELINE = Pipeline(
    name="cmnist-search",
    description="IRM's random (or TPE) hyperparameter search on Colored MNIST as a resumable Optuna study",
    presets=PRESETS,
    trainable=cmnist_trainable,
    search=search,
    report=report,
    metric="min_acc",
    mode="max",
    label=lambda c: f"{c['method']} h={c['hidden']} pw={float(c['penalty_weight']):.3g}",
)
