"""Thesis §5.4.2 / IRM paper: ERM, IRM, V-REx and MM-REx on the 8 toy linear SEMs.

Varies: setting (F/P fully or partially observed = confounder hidden,
O/E homo- or heteroskedastic, U/S unscrambled or scrambled), method, repetition
(seed = repetition; it draws the SEM and its data, shared by all methods).
Fixed (IRM / REx SEM code): dim 10 (5 causes + 5 effects), 1000 samples per
domain, sigma = 0.2 and 2.0 train, 5.0 validates; Adam lr 1e-3 for 100,000
steps; penalty weight chosen per run from the reference grid on the validation
domain; ERM = least squares on all domains pooled.
Reports: mean squared error of the learned coefficients (mapped back through
the scrambling) on the causal (x) and non-causal (z) coordinates, mean ± std
over repetitions, and a bar plot of both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.sem import SETTINGS, setting_from_code
from core.sem_train import IRM_DUMMIES, METHODS
from pipelines import reports
from pipelines.spec import GensweepError, Pipeline
from tasks.sem import sem_trainable, setting_of

NAMES = {"erm": "ERM", "irm": "IRM", "vrex": "V-REx", "mmrex": "MM-REx"}
COLORS = {"erm": "#8c8c8c", "irm": "#4c72b0", "vrex": "#dd8452", "mmrex": "#55a868"}

COMMON = dict(
    settings=[s.code for s in SETTINGS], methods=list(METHODS), dim=10, n_samples=1000, ones=True,
    lr=1e-3, penalty_weight=-1.0, anneal_iters=0, irm_dummy="vector",
    cpus_per_trial=1, gpus_per_trial=0.0, max_failures=2,
)
PRESETS = {
    "smoke": dict(COMMON, repetitions=2, steps=1000, eval_every=250),
    "paper": dict(COMMON, repetitions=10, steps=100_000, eval_every=10_000),
}


def _check(settings: dict) -> None:
    for method in settings["methods"]:
        if method not in METHODS:
            raise GensweepError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if settings["irm_dummy"] not in IRM_DUMMIES:
        raise GensweepError(f"unknown irm_dummy {settings['irm_dummy']!r} (choose from {', '.join(IRM_DUMMIES)})")
    if settings["dim"] < 2 or settings["dim"] % 2:
        raise GensweepError(f"dim must be even and >= 2, got {settings['dim']}")
    for key in ("repetitions", "n_samples", "eval_every"):
        if settings[key] < 1:
            raise GensweepError(f"{key} must be >= 1, got {settings[key]}")
    if settings["steps"] < 0:
        raise GensweepError(f"steps must be >= 0, got {settings['steps']}")


def trials(settings: dict) -> list[dict]:
    """One config per (setting, method, repetition)."""
    _check(settings)
    configs = []
    for code in settings["settings"]:
        try:
            setting = setting_from_code(code)
        except ValueError as exc:
            raise GensweepError(str(exc)) from None
        for method in settings["methods"]:
            for repetition in range(settings["repetitions"]):
                configs.append(
                    dict(
                        hidden=setting.hidden, hetero=setting.hetero, scrambled=setting.scrambled, ones=settings["ones"],
                        dim=settings["dim"], n_samples=settings["n_samples"], method=method, seed=repetition,
                        lr=settings["lr"], steps=settings["steps"], penalty_weight=settings["penalty_weight"],
                        anneal_iters=settings["anneal_iters"], irm_dummy=settings["irm_dummy"],
                        eval_every=settings["eval_every"],
                    )
                )
    return configs


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3g} ± {std:.2g}"


def _counts(values) -> str:
    """Distinct values with their counts, smallest first: ``0 (3), 0.1 (7)``."""
    distinct, counts = np.unique(np.asarray(values, dtype=float), return_counts=True)
    return ", ".join(f"{v:g} ({c})" for v, c in zip(distinct, counts))


def summary(frame) -> list[dict]:
    """Per (setting, method), in the paper's order: mean and std of both errors, selected regs, run count."""
    frame = frame.assign(setting=[setting_of(row).code for row in frame[["hidden", "hetero", "scrambled"]].to_dict("records")])
    rows = []
    for setting in SETTINGS:
        for method in [m for m in METHODS if m in set(frame["method"])]:
            runs = frame[(frame["setting"] == setting.code) & (frame["method"] == method)]
            if runs.empty:
                continue
            rows.append(
                dict(
                    setting=setting.code, description=setting.description, method=method,
                    causal=reports.mean_std(runs["causal_error"]), noncausal=reports.mean_std(runs["noncausal_error"]),
                    regs=_counts(runs["selected_reg"]), runs=len(runs),
                )
            )
    return rows


def report(frame, curves, out_dir: str) -> str:
    """Markdown table (setting x method: causal and non-causal error, mean ± std) and a bar plot PNG."""
    rows = summary(frame)
    table = reports.markdown_table(
        ["setting", "", "method", "causal error", "non-causal error", "selected reg (runs)", "runs"],
        [[r["setting"], r["description"], NAMES[r["method"]], _fmt(*r["causal"]), _fmt(*r["noncausal"]), r["regs"], r["runs"]] for r in rows],
    )
    errors_figure(rows, f"{out_dir}/errors.png")
    return (
        "Mean squared error of the learned coefficients on the causal (x) and non-causal (z) inputs, in the "
        "unscrambled coordinates, mean ± std over repetitions. Settings: F/P = fully / partially observed "
        "(hidden confounder), O/E = homo- / heteroskedastic, U/S = unscrambled / scrambled. "
        "selected reg: the reference's ERM share reg = 1 / (1 + penalty weight) of the model picked on the "
        "validation domain, with how many runs picked it (0 = pure penalty, 1 = ERM). The thesis text available here has no numbers for this experiment.\n\n" + table
    )


def errors_figure(rows: list[dict], path: str) -> None:
    """Two panels (causal, non-causal error): grouped bars per setting, one bar per method, log scale, ± std."""
    plt = reports._pyplot()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    codes = [s.code for s in SETTINGS if any(r["setting"] == s.code for r in rows)]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(methods))
    for ax, key, title in zip(axes, ("causal", "noncausal"), ("causal (x) coefficients", "non-causal (z) coefficients")):
        for i, method in enumerate(methods):
            by_code = {r["setting"]: r[key] for r in rows if r["method"] == method}
            x = np.array([j for j, code in enumerate(codes) if code in by_code])
            means = np.array([by_code[c][0] for c in codes if c in by_code])
            stds = np.array([by_code[c][1] for c in codes if c in by_code])
            lower = np.minimum(stds, means * 0.999)  # keep the error bars above zero on the log axis
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=[lower, stds], capsize=2,
                   label=NAMES[method], color=COLORS[method])
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(codes)), codes)
        ax.set_ylabel("mean squared error")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Toy SEMs: coefficient error (mean ± std over repetitions)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label(config: dict) -> str:
    return f"{setting_of(config).code} {config['method']} seed={config['seed']}"


PIPELINE = Pipeline(
    name="toy-sem",
    description="Thesis §5.4.2 (IRM paper's toy SEMs): ERM, IRM, V-REx and MM-REx coefficient errors on 8 linear SEM settings",
    presets=PRESETS,
    trainable=sem_trainable,
    trials=trials,
    report=report,
    metric="causal_error",
    mode="min",
    label=_label,
    needs_source=False,
)
