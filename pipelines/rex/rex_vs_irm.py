"""REx vs IRM under covariate shift (thesis §5.4.1, Figure 5.4 and the random-search counts).

Varies: variant (class / digit / color imbalance), p (shift between the two
training domains; p = 0 is disjoint support), method (ERM, IRM, V-REx, MM-REx).
Stage "fixed": IRM's published hyperparameters, ``restarts`` runs per
(variant, p, method); restart r draws its own domains (label noise, colours:
``data_seed = r``, as the REx scripts redraw them at every restart) and its own
initialisation (``seed = r``) -> test accuracy mean and standard error vs p.
Stage "search": ``num_samples`` configurations per (variant, p, method) from
IRM's random-search space (core.cmnist.hparams), one Optuna study each, selected on
min(train accuracies, test accuracy) -> how often each method beats chance
(50% test accuracy), and the best configuration. With the random sampler the
configurations are paired: every method of a (variant, p) trains the same
draws (sample i, model seed i) on the same domains (``data_seed``), so
methods are compared on equal hyperparameters; TPE samples per study.
Stage "retrain" (``retrain_top`` > 0, off by default): each study's best
configurations re-trained with ``retrain_seeds`` new seeds and domains,
built from the search's rows once the search is complete.
The REx scripts train every method with the summed risk (REx code), so
``risk_reduction`` defaults to sum here. Each Ray trial trains a block of up
to ``block_size`` configurations at once.
"""
from __future__ import annotations

from itertools import product

from core import methods
from core.cmnist import hparams
from core.cmnist.sources import MIN_EMBEDDED_IMAGES
from pipelines.engine import reports
from pipelines.rex.common import (
    EMBEDDED_SETTINGS, HOLDOUT_SETTING, RETRAIN_SETTINGS, holdout_keys, load_images, methods_setting, reduction_keys, reduction_note,
    retrain_stage, retrain_table, risk_reduction_setting, validation_table,
)
from pipelines.engine.spec import Grid, Pipeline, Search, Setting, Stage
from tasks.cmnist import cmnist_trainable

VARIANTS = ("class", "digit", "color")
METHODS = ("erm", "irm", "vrex", "mmrex")
STAGES = ("fixed", "search")
STYLES = {"erm": ("o", "-"), "irm": ("s", "--"), "vrex": ("^", "-."), "mmrex": ("D", ":")}  # marker, line: overlaps stay visible
VARIANT_NAMES = {"class": "Class imbalance", "digit": "Digit (shape) imbalance", "color": "Color imbalance"}
NAMES = {m: methods.get(m).display for m in METHODS}

SETTINGS = {
    "stages": Setting(list(STAGES), "stages to run: fixed (Figure 5.4) and/or search (the random searches)", choices=STAGES),
    "variants": Setting(list(VARIANTS), "covariate-shift variants", choices=VARIANTS),
    "ps": Setting([0.1, 0.3], "shift p between the training domains (0: disjoint support)", ge=0.0, le=0.5),
    "methods": methods_setting(list(METHODS), list(METHODS)),
    "restarts": Setting(3, "stage fixed: runs per (variant, p, method), each with its own domains and seed", ge=1),
    "num_samples": Setting(4, "stage search: configurations per (variant, p, method)", ge=1),
    "block_size": Setting(8, "stage search: configurations trained together in one Tune trial", ge=1),
    "block_memory_gb": Setting(0.0, "activation memory (GiB) one trial's block may use; a bigger block is split into "
                               "sub-blocks run one after another (0: a share of the device's memory)", ge=0.0),
    "sampler": Setting("random", "stage search: random (paired across methods) or tpe (per study)", choices=("random", "tpe")),
    "data_seed": Setting(0, "stage search: seed of the domains of every (variant, p); also seeds the draws", ge=0),
    "steps": Setting(201, "full-batch Adam steps per configuration", ge=1),
    "eval_every": Setting(50, "steps between evaluations", ge=1),
    "risk_reduction": risk_reduction_setting("sum"),  # the REx covariate-shift scripts sum the risks of every method
    "holdout": HOLDOUT_SETTING,
    **RETRAIN_SETTINGS,
    **EMBEDDED_SETTINGS,
}
PRESETS = {
    "smoke": dict(embedded_images=MIN_EMBEDDED_IMAGES),  # each embedded source digit drawn once: minutes on 2 cores
    "paper": dict(ps=list(hparams.SHIFT_PS), num_samples=hparams.SEARCH_SAMPLES, steps=hparams.STEPS, eval_every=100),
}


def _settings(settings: dict) -> list[dict]:
    memory = float(settings.get("block_memory_gb", 0.0))
    device = {"block_memory_gb": memory} if memory > 0 else {}  # only when set: configs (and trial keys) stay as they were
    return [
        dict(variant=variant, shift_p=float(p), method=method, steps=settings["steps"], eval_every=settings["eval_every"],
             **reduction_keys(method, settings["risk_reduction"]), **device)
        for variant, p, method in product(settings["variants"], settings["ps"], settings["methods"])
    ]


def _label(c: dict) -> str:
    return f"{c['method']} {c['variant']} p={c['shift_p']:g} seed={c['seed']}"


def stages(settings: dict) -> list[Stage]:
    """Stage fixed: one config per (variant, p, method, restart); stage search: one study per (variant, p, method)."""
    out = []
    if "fixed" in settings["stages"]:
        configs = [
            {**setting, **hparams.IRM, "seed": restart, "data_seed": restart}
            for setting in _settings(settings) for restart in range(settings["restarts"])
        ]
        out.append(Stage("fixed", cmnist_trainable, Grid(configs), metric="test_acc", label=_label))
    if "search" in settings["stages"]:
        search = Search(
            studies=[{**s, "data_seed": settings["data_seed"], **holdout_keys(settings)} for s in _settings(settings)],
            study_name=lambda s: f"{s['variant']}/p={s['shift_p']}/{s['method']}",
            space=hparams.random_space, budget=settings["num_samples"], block_size=settings["block_size"],
            sampler=settings["sampler"], seed=settings["data_seed"], paired_by=("variant", "shift_p"),
        )
        out.append(Stage("search", cmnist_trainable, search, metric="min_acc", mode="max", label=_label))
        out += retrain_stage(settings, cmnist_trainable, "min_acc", _label)
    return out


def report(frame, curves, out_dir: str) -> str:
    """Figure 5.4 (stage 1) and the beats-chance table (stage 2)."""
    parts = [reduction_note(frame)]
    fixed = frame[frame["stage"] == "fixed"]
    if not fixed.empty:
        parts.append("## Stage 1: IRM's hyperparameters, test accuracy (%) mean ± s.e.\n\n" + _figure_5_4(fixed, f"{out_dir}/figure_5_4.png"))
    search = frame[frame["stage"] == "search"]
    if not search.empty:
        parts.append("## Stage 2: random search, configurations beating chance (test accuracy > 50%)\n\n" + _chance_table(search, f"{out_dir}/above_chance.png"))
        validation = validation_table(search, curves)
        if validation:
            parts.append("## Stage 2: the configuration each selection rule picks\n\n" + validation)
    retrain = frame[frame["stage"] == "retrain"]
    if not retrain.empty:
        describe = lambda r: f"h={int(r['hidden'])} lr={r['lr']:.2g} pw={r['penalty_weight']:.3g}"
        parts.append("## Stage 3: each study's best configurations re-trained with new seeds and domains\n\n"
                     + retrain_table(retrain, search, describe))
    return "\n".join(parts)


def _methods(frame) -> list[str]:
    return [m for m in METHODS if m in set(frame["method"])]


def _figure_5_4(frame, path: str) -> str:
    variants = [v for v in VARIANTS if v in set(frame["variant"])]
    fig, axes = reports.figure(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
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
    reports.save_figure(fig, path)
    return reports.markdown_table(["variant", "p", "method", "test acc"], rows)


def _chance_table(frame, path: str) -> str:
    methods = _methods(frame)
    rows = []
    variants = [v for v in VARIANTS if v in set(frame["variant"])]
    fig, axes = reports.figure(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
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
    reports.save_figure(fig, path)
    note = "Each cell: share of configurations with test accuracy > 50% (count), and the test accuracy (%) of the configuration selected on min(train, test) accuracy.\n\n"
    return note + reports.markdown_table(["variant", "p"] + [NAMES[m] for m in methods], rows)


PIPELINE = Pipeline(
    name="rex-vs-irm",
    description="REx vs IRM on Colored MNIST with covariate shift: Figure 5.4 and the 340-configuration searches",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=load_images,
    stages=stages,
    report=report,
)
