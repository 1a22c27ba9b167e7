"""REx vs IRM under covariate shift (thesis §5.4.1, Figure 5.4 and the random-search counts).

Varies: variant (class / digit / color imbalance), p (shift between the two
training domains; p = 0 is disjoint support), method (ERM, IRM, V-REx, MM-REx).
Stage 1 ("fixed"): IRM's published hyperparameters, ``restarts`` model seeds
per (variant, p, method) -> test accuracy mean and standard error vs p.
Stage 2 ("search"): ``num_samples`` configurations per (variant, p, method)
from IRM's random-search space, one Optuna study each (RandomSampler, or
TPE), selected on min(train accuracies, test accuracy) -> how often each
method beats chance (50% test accuracy), and the best configuration.
Each Ray trial trains a block of ``block_size`` configurations at once.
The domains of a (variant, p) are drawn once (``data_seed``); trials differ in
model initialisation (stage 1) or hyperparameters and initialisation (stage 2).
"""
from __future__ import annotations

from itertools import product

from pipelines import reports
from pipelines.block_search import BlockSearch
from pipelines.cmnist_search import irm_space
from pipelines.cmnist_table import IRM_HPARAMS, NAMES
from pipelines.spec import GensweepError, Pipeline
from tasks.cmnist import cmnist_block_trainable

VARIANTS = ("class", "digit", "color")
METHODS = ("erm", "irm", "vrex", "mmrex")
STYLES = {"erm": ("o", "-"), "irm": ("s", "--"), "vrex": ("^", "-."), "mmrex": ("D", ":")}  # marker, line: overlaps stay visible
VARIANT_NAMES = {"class": "Class imbalance", "digit": "Digit (shape) imbalance", "color": "Color imbalance"}

COMMON = dict(
    variants=list(VARIANTS), methods=list(METHODS), data_seed=0, sampler="random", cpus_per_trial=1,
    gpus_per_trial=0.25, max_failures=2,
)
PRESETS = {
    "smoke": dict(COMMON, ps=[0.1, 0.3], restarts=3, num_samples=4, block_size=8, steps=201, eval_every=50),
    "paper": dict(COMMON, ps=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5], restarts=3, num_samples=340, block_size=8, steps=501, eval_every=100),
}


def _settings(settings: dict, stage: str) -> list[dict]:
    for variant in settings["variants"]:
        if variant not in VARIANTS:
            raise GensweepError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    for method in settings["methods"]:
        if method not in METHODS:
            raise GensweepError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    for p in settings["ps"]:
        if not 0.0 <= p <= 0.5:
            raise GensweepError(f"bad p {p}: must lie in [0, 0.5]")
    if settings["block_size"] < 1:
        raise GensweepError("block_size must be at least 1")
    return [
        dict(variant=variant, shift_p=float(p), method=method, steps=settings["steps"], eval_every=settings["eval_every"],
             data_seed=settings["data_seed"], stage=stage)
        for variant, p, method in product(settings["variants"], settings["ps"], settings["methods"])
    ]


def trials(settings: dict) -> list[dict]:
    """Stage 1: one block per (variant, p, method) holding ``restarts`` seeds at IRM's hyperparameters."""
    if settings["restarts"] < 1:
        _settings(settings, "fixed")  # still validate
        return []
    return [
        {**setting, "study": "", "block": [dict(IRM_HPARAMS, seed=seed) for seed in range(settings["restarts"])]}
        for setting in _settings(settings, "fixed")
    ]


def block_search(settings: dict) -> BlockSearch:
    """Stage 2: one Optuna study of ``num_samples`` configurations per (variant, p, method)."""
    if settings["sampler"] not in ("random", "tpe"):
        raise GensweepError(f"unknown sampler {settings['sampler']!r} (choose from random, tpe)")
    return BlockSearch(
        settings=_settings(settings, "search"),
        study_name=lambda s: f"{s['variant']}/p={s['shift_p']}/{s['method']}",
        space=irm_space, budget=settings["num_samples"], block_size=settings["block_size"], metric="min_acc",
        mode="max", sampler=settings["sampler"], seed=settings["data_seed"],
    )


def report(frame, curves, out_dir: str) -> str:
    """Figure 5.4 (stage 1) and the beats-chance table (stage 2)."""
    parts = []
    fixed = frame[frame["stage"] == "fixed"]
    if not fixed.empty:
        parts.append("## Stage 1: IRM's hyperparameters, test accuracy (%) mean ± s.e.\n\n" + _figure_5_4(fixed, f"{out_dir}/figure_5_4.png"))
    search = frame[frame["stage"] == "search"]
    if not search.empty:
        parts.append("## Stage 2: random search, configurations beating chance (test accuracy > 50%)\n\n" + _chance_table(search, f"{out_dir}/above_chance.png"))
    return "\n".join(parts)


def _methods(frame) -> list[str]:
    return [m for m in METHODS if m in set(frame["method"])]


def _figure_5_4(frame, path: str) -> str:
    plt = reports._pyplot()
    variants = [v for v in VARIANTS if v in set(frame["variant"])]
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
    rows = []
    for ax, variant in zip(axes[0], variants):
        part = frame[frame["variant"] == variant]
        for method in _methods(part):
            stats = [(p, *reports.mean_sem(100 * g["test_acc"])) for p, g in part[part["method"] == method].groupby("shift_p")]
            ps, means, sems = zip(*stats)
            marker, line = STYLES[method]
            ax.errorbar(ps, means, yerr=sems, marker=marker, ls=line, capsize=3, label=NAMES[method])
            rows += [[VARIANT_NAMES[variant], f"{p:g}", NAMES[method], reports.pm(m, s)] for p, m, s in stats]
        ax.axhline(50, color="grey", ls="--", lw=0.8)
        ax.set_title(VARIANT_NAMES[variant])
        ax.set_xlabel("p (0: disjoint support)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlim(-0.02, 0.52)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return reports.markdown_table(["variant", "p", "method", "test acc"], rows)


def _chance_table(frame, path: str) -> str:
    plt = reports._pyplot()
    methods = _methods(frame)
    rows = []
    variants = [v for v in VARIANTS if v in set(frame["variant"])]
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        part = frame[frame["variant"] == variant]
        for p, group in part.groupby("shift_p"):
            cells = []
            for method in methods:
                runs = group[group["method"] == method]
                above = int((runs["test_acc"] > 0.5).sum())
                best = runs.sort_values("min_acc", ascending=False).head(1)
                best_text = f"{100 * best['test_acc'].item():.1f}" if len(best) else "–"
                cells.append(f"{100 * above / max(1, len(runs)):.1f}% ({above}/{len(runs)}), best {best_text}")
            rows.append([VARIANT_NAMES[variant], f"{p:g}"] + cells)
        for method in methods:
            runs = part[part["method"] == method]
            share = runs.groupby("shift_p")["test_acc"].apply(lambda s: 100 * (s > 0.5).mean())
            marker, line = STYLES[method]
            ax.plot(share.index, share.values, marker=marker, ls=line, mfc="none", ms=9 - 2 * methods.index(method), label=NAMES[method])
        ax.set_title(VARIANT_NAMES[variant])
        ax.set_xlabel("p")
        ax.set_ylabel("% of configurations beating chance")
        ax.set_xlim(-0.02, 0.52)
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    note = "Each cell: share of configurations with test accuracy > 50% (count), and the test accuracy (%) of the configuration selected on min(train, test) accuracy.\n\n"
    return note + reports.markdown_table(["variant", "p"] + [NAMES[m] for m in methods], rows)


PIPELINE = Pipeline(
    name="rex-vs-irm",
    description="REx vs IRM on Colored MNIST with covariate shift: Figure 5.4 and the 340-configuration searches",
    presets=PRESETS,
    trainable=cmnist_block_trainable,
    trials=trials,
    block_search=block_search,
    report=report,
    metric="test_acc",
    mode="max",
    label=lambda c: f"{c['method']} {c['variant']} p={c['shift_p']:g} seed={c['seed']}",
)
