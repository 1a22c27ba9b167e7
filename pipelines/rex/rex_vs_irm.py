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
(50% test accuracy), and the best configuration. The search runs at every p of
``ps``, or (``search_at`` = small) only at each variant's small p, where the
thesis counts (class 0.1, digit 0.1, colour 0.2). With the random sampler the
configurations are paired: every method of a (variant, p) trains the same
draws (sample i, model seed i) on the same domains (``data_seed``), so
methods are compared on equal hyperparameters; TPE samples per study.
Stage "retrain" (``retrain_top`` > 0, off by default): each study's best
configurations re-trained with ``retrain_seeds`` new seeds and domains,
built from the search's rows once the search is complete.
The REx scripts train every method with the summed risk (REx code), so
``risk_reduction`` defaults to sum here. Each Ray trial trains a block of up
to ``block_size`` configurations at once.

Presets: ``smoke`` (plumbing), ``cpu`` (both claims at a size 2 CPU cores run
in about 3 hours, in parts if need be: ``PRESET_HELP`` has its arithmetic)
and ``paper`` (the thesis's sizes).
"""
from __future__ import annotations

import math
from itertools import product

import numpy as np

from core import methods
from core.cmnist import hparams
from core.cmnist.sources import MIN_EMBEDDED_IMAGES
from pipelines.engine import reports
from pipelines.rex.common import (
    EMBEDDED_SETTINGS, HOLDOUT_SETTING, RETRAIN_SETTINGS, check_retrain, holdout_keys, load_images, methods_setting, reduction_keys, reduction_note,
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

THESIS_SEARCH = hparams.SEARCH_ABOVE_CHANCE  # per variant: (the thesis's small p, REx's share above chance in %)
SMALL_PS = {variant: p for variant, (p, _) in THESIS_SEARCH.items()}
CHANCE = 0.5  # a configuration beats chance when its test accuracy is above this (the test domain's classes are balanced)
COLLAPSE_NLL = 0.01  # collapsed: every domain's NLL within this of ln 2 (outputs ~0.5 everywhere: a constant predictor)
FOLLOWS_COLOR = 0.4  # following colour: test accuracy below this (colour agrees with the label on 10% of test images)
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals

SETTINGS = {
    "stages": Setting(list(STAGES), "stages to run: fixed (Figure 5.4) and/or search (the random searches)", choices=STAGES),
    "variants": Setting(list(VARIANTS), "covariate-shift variants", choices=VARIANTS),
    "ps": Setting([0.1, 0.3], "shift p between the training domains (0: disjoint support)", ge=0.0, le=0.5),
    "methods": methods_setting(list(METHODS), list(METHODS)),
    "restarts": Setting(3, "stage fixed: runs per (variant, p, method), each with its own domains and seed", ge=1),
    "num_samples": Setting(4, "stage search: configurations per (variant, p, method)", ge=1),
    "search_at": Setting("ps", "stage search: at every p of ps (ps), or only at each variant's small p, where the thesis "
                         "counts the configurations beating chance (small: class 0.1, digit 0.1, colour 0.2)",
                         choices=("ps", "small"), opt_in=True),
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

CPU_IMAGES = 6_000
CPU_HELP = (
    "the two claims on 2 CPU cores in about 2.7 hours, in parts if need be (--set stages=fixed, then --set stages=search: "
    "two sweeps, each resumable). Deviations from paper, each a setting: embedded_images 6,000 (paper: 12,000; test "
    "domain 398-1,000 images), ps 0.1 / 0.2 / 0.5 (paper: 0 .. 0.5), restarts 5 (paper: 3), search_at small (the search "
    "only at each variant's small p: class 0.1, digit 0.1, colour 0.2; paper: every p), num_samples 40 (paper: 340); "
    "steps 501, eval_every 100 and block_size 8 as paper (on CPU a block's models train one after another, so the "
    "block size sets only what an interruption loses: at most 8 configurations, about 5 CPU minutes of colour). Timing probe (train_block on one thread, 51 steps, CPU time per model-step, "
    "measured on 2 cores at load 5-10): IRM's hidden 390: class 61 ms, digit 58, colour 133; a block of 8 random draws "
    "(mean width 241): class 36, digit 31, colour 73. Fixed: 3 p x 4 methods x 5 restarts x (61 + 58 + 133) ms x 501 "
    "steps = 60 x 126 s = 7,600 CPU s; search: 40 draws x 4 methods x (36 + 31 + 73) ms x 501 = 160 x 70 s = "
    "11,200 CPU s; 18,800 CPU s on 2 cores = 2.6 h, plus Ray's overhead (about 5 minutes)"
)
PRESETS = {
    "smoke": dict(embedded_images=MIN_EMBEDDED_IMAGES),  # each embedded source digit drawn once: minutes on 2 cores
    "cpu": dict(embedded_images=CPU_IMAGES, ps=[0.1, 0.2, 0.5], restarts=5, search_at="small", num_samples=40,
                steps=hparams.STEPS, eval_every=100),
    "paper": dict(ps=list(hparams.SHIFT_PS), num_samples=hparams.SEARCH_SAMPLES, steps=hparams.STEPS, eval_every=100),
}
PRESET_HELP = {
    "smoke": f"embedded digits ({MIN_EMBEDDED_IMAGES:,}), p 0.1 / 0.3, 3 restarts, 4 configurations per study, 201 steps: plumbing only",
    "cpu": CPU_HELP,
    "paper": "the thesis's sizes: p 0 .. 0.5 (Figure 5.4), 3 restarts, 340 configurations per (variant, p, method), "
             "501 steps, on 12,000 embedded digits (or --data-dir MNIST)",
}


def _pairs(settings: dict, stage: str) -> list[tuple[str, float]]:
    """The (variant, p) of a stage: each variant at every p of ``ps``; the search with ``search_at`` = small: each variant at its small p."""
    if stage == "search" and settings.get("search_at") == "small":
        return [(variant, SMALL_PS[variant]) for variant in settings["variants"]]
    return list(product(settings["variants"], settings["ps"]))


def _settings(settings: dict, stage: str) -> list[dict]:
    memory = float(settings.get("block_memory_gb", 0.0))
    device = {"block_memory_gb": memory} if memory > 0 else {}  # only when set: configs (and trial keys) stay as they were
    return [
        dict(variant=variant, shift_p=float(p), method=method, steps=settings["steps"], eval_every=settings["eval_every"],
             **reduction_keys(method, settings["risk_reduction"]), **device)
        for (variant, p), method in product(_pairs(settings, stage), settings["methods"])
    ]


def _label(c: dict) -> str:
    return f"{c['method']} {c['variant']} p={c['shift_p']:g} seed={c['seed']}"


def stages(settings: dict) -> list[Stage]:
    """Stage fixed: one config per (variant, p, method, restart); stage search: one study per (variant, p, method)."""
    out = []
    if "fixed" in settings["stages"]:
        configs = [
            {**setting, **hparams.IRM, "seed": restart, "data_seed": restart}
            for setting in _settings(settings, "fixed") for restart in range(settings["restarts"])
        ]
        out.append(Stage("fixed", cmnist_trainable, Grid(configs), metric="test_acc", label=_label))
    if "search" in settings["stages"]:
        search = Search(
            studies=[{**s, "data_seed": settings["data_seed"], **holdout_keys(settings)} for s in _settings(settings, "search")],
            study_name=lambda s: f"{s['variant']}/p={s['shift_p']}/{s['method']}",
            space=hparams.random_space, budget=settings["num_samples"], block_size=settings["block_size"],
            sampler=settings["sampler"], seed=settings["data_seed"], paired_by=("variant", "shift_p"),
        )
        out.append(Stage("search", cmnist_trainable, search, metric="min_acc", mode="max", label=_label))
        out += retrain_stage(settings, cmnist_trainable, "min_acc", _label)
    return out


def report(frame, curves, out_dir: str) -> str:
    """Figure 5.4 (stage 1) and the beats-chance counts, failure modes and selected configurations (stage 2)."""
    parts = [reduction_note(frame)]
    fixed = frame[frame["stage"] == "fixed"]
    if not fixed.empty:
        parts.append("## Stage 1: IRM's hyperparameters, test accuracy (%) mean ± s.e. over restarts (Figure 5.4)\n\n"
                     + _figure_5_4(fixed, f"{out_dir}/figure_5_4.png"))
    search = frame[frame["stage"] == "search"]
    if not search.empty:
        parts.append("## Stage 2: random search, configurations beating chance (test accuracy > 50%)\n\n"
                     + _chance_table(search, f"{out_dir}/above_chance.png"))
        parts.append("## Stage 2: the configuration selected per study (min(train, test) accuracy)\n\n" + _selected_table(search))
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


def _variants(frame) -> list[str]:
    return [v for v in VARIANTS if v in set(frame["variant"])]


def _figure_5_4(frame, path: str) -> str:
    variants = _variants(frame)
    fig, axes = reports.figure(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
    rows = []
    for ax, variant in zip(axes[0], variants):
        part = frame[frame["variant"] == variant]
        for method in _methods(part):
            groups = part[part["method"] == method].groupby("shift_p")
            stats = [(p, *reports.mean_sem(100 * g["test_acc"]), len(g)) for p, g in groups]
            ps, means, sems, _ = zip(*stats)
            marker, line = STYLES[method]
            ax.errorbar(ps, means, yerr=sems, marker=marker, ls=line, capsize=3, label=NAMES[method])
            rows += [[VARIANT_NAMES[variant], f"{p:g}", NAMES[method], reports.pm(m, s), n] for p, m, s, n in stats]
        ax.axhline(100 * CHANCE, color="grey", ls="--", lw=0.8)
        ax.set_title(VARIANT_NAMES[variant])
        ax.set_xlabel("p (0: disjoint support)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlim(-0.02, 0.52)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    reports.save_figure(fig, path)
    note = ("The thesis gives Figure 5.4 as a plot only (mean and standard error over 3 trials, p from 0 to 0.5): its text "
            "has no numbers to set beside these, only the claim \"V-REx significantly outperforms IRM in every case\"; "
            "the differences below test that claim.\n\n")
    text = note + reports.markdown_table(["variant", "p", "method", "test acc", "restarts"], rows)
    differences = _differences(frame)
    return text + ("\n" + differences if differences else "") + "\n![Figure 5.4](figure_5_4.png)\n"


def _differences(frame) -> str:
    """Per (variant, p): V-REx − IRM test accuracy (points), paired by restart (restart r: the same domains and seed)."""
    if not {"irm", "vrex"} <= set(frame["method"]):
        return ""
    table = frame.pivot_table(index=["variant", "shift_p", "seed"], columns="method", values="test_acc", aggfunc="mean")
    table = table[["irm", "vrex"]].dropna()
    rows = []
    for variant in _variants(frame):
        if variant not in table.index.get_level_values(0):
            continue
        for p, group in table.loc[variant].groupby(level=0):
            gap = 100 * (group["vrex"] - group["irm"])
            rows.append([VARIANT_NAMES[variant], f"{p:g}", reports.pm(*reports.mean_sem(gap)),
                         f"{int((gap > 0).sum())}/{len(gap)}"])
    note = "V-REx − IRM test accuracy (points), mean ± s.e. over restarts paired by restart (the same domains and seed):\n\n"
    return note + reports.markdown_table(["variant", "p", "V-REx − IRM", "restarts V-REx ahead"], rows)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share k / n (no continuity correction; scipy's
    ``binomtest(k, n).proportion_ci(method="wilson")``); (0, 1) when n = 0. Its ends are exactly 0 at k = 0 and 1
    at k = n (in floating point they come out a hair inside, and the share would stand outside its own interval)."""
    if n <= 0:
        return 0.0, 1.0
    share = k / n
    scale = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / scale
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / scale
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def collapsed(frame) -> "np.ndarray":
    """Per row: the configuration collapsed to a constant predictor, its outputs ~0.5 everywhere (logits ~0, where
    IRM's penalty is zero): every domain's NLL (``train1_nll``, ``train2_nll``, ..., ``test_nll``) within
    ``COLLAPSE_NLL`` of ln 2."""
    columns = [c for c in frame.columns if c.startswith("train") and c.endswith("_nll") and c[5:-4].isdigit()] + ["test_nll"]
    if len(columns) < 2 or any(c not in frame for c in columns):
        return np.zeros(len(frame), dtype=bool)
    return ((frame[columns] - math.log(2)).abs() <= COLLAPSE_NLL).all(axis=1).to_numpy()


def search_outcomes(frame) -> list[dict]:
    """Per (variant, p, method) of the search rows: ``n`` configurations, ``above`` chance (test accuracy > CHANCE,
    the thesis's count) with its Wilson 95% interval (``low``, ``high``), ``collapsed`` (:func:`collapsed`),
    ``against`` colour (mean training accuracy < CHANCE: below chance on its own training domains, where colour agrees
    with the label 80-90% of the time, so predicting the opposite of colour; above chance on the test domain for that
    reason), ``follows`` colour (test accuracy < FOLLOWS_COLOR) and ``above_live`` (above chance, neither collapsed
    nor against colour)."""
    out = []
    for variant in _variants(frame):
        part = frame[frame["variant"] == variant]
        for p, group in part.groupby("shift_p"):
            for method in _methods(group):
                runs = group[group["method"] == method]
                above = (runs["test_acc"] > CHANCE).to_numpy()
                flat = collapsed(runs)
                against = (runs["train_acc"] < CHANCE).to_numpy()
                low, high = wilson(int(above.sum()), len(runs))
                out.append(dict(variant=variant, shift_p=float(p), method=method, n=len(runs), above=int(above.sum()),
                                low=low, high=high, collapsed=int(flat.sum()), against=int(against.sum()),
                                follows=int((runs["test_acc"] < FOLLOWS_COLOR).sum()),
                                above_live=int((above & ~flat & ~against).sum())))
    return out


def _thesis_cell(variant: str, p: float, method: str) -> str:
    """The thesis's share at its small p: IRM "never" (0%), REx's percentage beside V-REx; "–" elsewhere."""
    small, share = THESIS_SEARCH[variant]
    if not math.isclose(p, small):
        return "–"
    return {"irm": "0% (\"never\")", "vrex": f"{share:.1f}% (REx)"}.get(method, "–")


def _chance_table(frame, path: str) -> str:
    outcomes = search_outcomes(frame)
    rows = []
    for o in outcomes:
        share = 100 * o["above"] / o["n"]
        rows.append([VARIANT_NAMES[o["variant"]], f"{o['shift_p']:g}", NAMES[o["method"]], f"{o['above']}/{o['n']}",
                     f"{share:.1f}% [{100 * o['low']:.1f}, {100 * o['high']:.1f}]", _thesis_cell(o["variant"], o["shift_p"], o["method"]),
                     f"{o['collapsed']}/{o['n']}", f"{o['against']}/{o['n']}", f"{o['follows']}/{o['n']}",
                     f"{o['above_live']}/{o['n']}"])
    variants = _variants(frame)
    fig, axes = reports.figure(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
    methods_here = _methods(frame)
    if all(len({o["shift_p"] for o in outcomes if o["variant"] == v}) == 1 for v in variants):
        _draw_shares_per_method(axes[0], variants, methods_here, outcomes)  # searched at one p each (search_at=small)
    else:
        _draw_shares_against_p(axes[0], variants, methods_here, outcomes)
    reports.save_figure(fig, path)
    note = (f"Per study: configurations with test accuracy > {100 * CHANCE:g}% (the thesis's count), the share with its "
            "Wilson score 95% interval (binomial, no continuity correction), and the thesis's share at its small p (its "
            "340-configuration searches: \"IRM never achieves better than random chance performance, while REx does better "
            "than random in 4.4%/23.7%/2.0% of trials\"; the sentence is about V-REx vs IRM, so REx's share stands beside "
            "V-REx). Failure modes, counted separately: collapsed to a constant predictor (every domain's NLL within "
            f"{COLLAPSE_NLL:g} of ln 2: outputs ~0.5 everywhere; it lands at about chance on the test domain, either "
            "side, so the thesis's rule counts some), predicting against colour (mean training accuracy below 50%: the "
            "opposite of colour, which agrees with the label on 80-90% of training images and 10% of test images, so it "
            f"beats chance on the test domain for the wrong reason), following colour (test accuracy below "
            f"{100 * FOLLOWS_COLOR:g}%), and the configurations above chance that neither collapsed nor predict against "
            "colour.\n\n")
    header = ["variant", "p", "method", "above chance", "share [95% CI]", "thesis", "collapsed", "against colour",
              "follows colour", "above, not degenerate"]
    return note + reports.markdown_table(header, rows) + "\n![share beating chance](above_chance.png)\n"


def _errors(shares, mine):
    """Error-bar lengths (below, above) of each share (%) from its Wilson interval."""
    return np.array([[s - 100 * o["low"] for s, o in zip(shares, mine)], [100 * o["high"] - s for s, o in zip(shares, mine)]])


def _draw_shares_against_p(axes, variants, methods_here, outcomes) -> None:
    """One panel per variant: each method's share beating chance against p, the thesis's shares at its small p."""
    for ax, variant in zip(axes, variants):
        for j, method in enumerate(methods_here):
            mine = [o for o in outcomes if o["variant"] == variant and o["method"] == method]
            if not mine:
                continue
            ps = np.array([o["shift_p"] for o in mine]) + 0.01 * (j - (len(methods_here) - 1) / 2)  # side by side
            shares = np.array([100 * o["above"] / o["n"] for o in mine])
            marker, line = STYLES[method]
            ax.errorbar(ps, shares, yerr=_errors(shares, mine), marker=marker, ls=line, capsize=3, label=NAMES[method])
        small, share = THESIS_SEARCH[variant]
        ax.plot([small, small], [share, 0.0], "kx", ms=9, mew=2, label="thesis: REx, IRM")
        ax.set_title(VARIANT_NAMES[variant])
        ax.set_xlabel("p")
        ax.set_ylabel("% of configurations beating chance")
        ax.set_xlim(-0.02, 0.52)
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=8)


def _draw_shares_per_method(axes, variants, methods_here, outcomes) -> None:
    """One panel per variant searched at a single p: each method's share beating chance with its interval, and the
    thesis's shares (REx beside V-REx, IRM's "never") as crosses."""
    top = max([100 * o["high"] for o in outcomes] + [share for _, share in THESIS_SEARCH.values()])
    for ax, variant in zip(axes, variants):
        mine = [next((o for o in outcomes if o["variant"] == variant and o["method"] == m), None) for m in methods_here]
        for j, (method, o) in enumerate(zip(methods_here, mine)):
            if o is None:
                continue
            ours = np.array([100 * o["above"] / o["n"]])
            marker, _ = STYLES[method]
            ax.errorbar([j], ours, yerr=_errors(ours, [o]), marker=marker, ls="none", capsize=4, ms=8, label=NAMES[method])
        p = next(o["shift_p"] for o in mine if o is not None)
        small, share = THESIS_SEARCH[variant]
        thesis = [(methods_here.index(m) + 0.2, s) for m, s in (("vrex", share), ("irm", 0.0)) if m in methods_here]  # beside ours
        if thesis and math.isclose(p, small):  # the thesis counts at its small p only
            ax.plot(*zip(*thesis), "kx", ms=10, mew=2, label="thesis (340 configurations): REx, IRM")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(range(len(methods_here)), [NAMES[m] for m in methods_here])
        n = max(o["n"] for o in mine if o is not None)
        ax.set_title(f"{VARIANT_NAMES[variant]}, p = {p:g} ({n} configurations)")
        ax.set_ylabel("% beating chance (Wilson 95%)")
        ax.set_ylim(-2, min(102, top + 8))
        ax.legend(fontsize=8, loc="upper left")


def _selected_table(frame) -> str:
    """Per study, the configuration the IRM search's criterion selects (highest min(train, test) accuracy; ties: the
    smaller trial key): its hyperparameters, sample and accuracies."""
    rows = []
    for variant in _variants(frame):
        part = frame[frame["variant"] == variant]
        for p, group in part.groupby("shift_p"):
            for method in _methods(group):
                runs = group[group["method"] == method]
                best = runs.sort_values(["min_acc", "trial_key"], ascending=[False, True]).iloc[0]
                cell = lambda key, fmt, best=best: "–" if _missing(best.get(key)) else format(best[key], fmt)
                rows.append([VARIANT_NAMES[variant], f"{p:g}", NAMES[method], cell("sample", ".0f"), cell("hidden", ".0f"),
                             cell("l2", ".2g"), cell("lr", ".2g"), cell("anneal_iters", ".0f"),
                             "–" if method == "erm" else cell("penalty_weight", ".3g"), f"{100 * best['min_acc']:.1f}",
                             f"{100 * best['train_acc']:.1f}", f"{100 * best['test_acc']:.1f}"])
    header = ["variant", "p", "method", "sample", "hidden", "l2", "lr", "anneal", "penalty", "min acc", "train acc", "test acc"]
    return "Penalty: none for ERM. Accuracies in %.\n\n" + reports.markdown_table(header, rows)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


PIPELINE = Pipeline(
    name="rex-vs-irm",
    description="REx vs IRM on Colored MNIST with covariate shift: Figure 5.4 and the 340-configuration searches",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=load_images,
    stages=stages,
    report=report,
    check=check_retrain,
    preset_help=PRESET_HELP,
)
