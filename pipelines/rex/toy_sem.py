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


import numpy as np

from core import methods
from core.sem import hparams
from core.sem.data import SETTINGS as SEM_SETTINGS
from core.sem.data import setting_from_code
from core.sem.train import IRM_DUMMIES
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, NoData, Pipeline, Setting, Stage
from tasks.sem import sem_trainable, setting_of

METHODS = ("erm", "irm", "vrex", "mmrex")
COLORS = {"erm": "#8c8c8c", "irm": "#4c72b0", "vrex": "#dd8452", "mmrex": "#55a868"}
WEIGHTS = {
    "ones": "W_xy = W_yz = I (IRM code's setup_ones, the IRM paper's experiment)",
    "gaussian": "W_xy, W_yz with N(0, 1) / dim entries (the REx code's copy of the script)",
}

SETTINGS = {
    "settings": Setting([s.code for s in SEM_SETTINGS], "SEM settings by code (F/P observed, O/E skedasticity, U/S scrambling)",
                        choices=tuple(s.code for s in SEM_SETTINGS)),
    "methods": Setting(list(METHODS), "methods (ERM in closed form)", choices=("erm", *methods.names(input="full", penalized=True))),
    "repetitions": Setting(2, "repetitions (seed = repetition: draws the SEM and its data)", ge=1),
    "weights": Setting("ones", "weight convention: ones (IRM code) or gaussian (REx code)", choices=tuple(WEIGHTS)),
    "dim": Setting(hparams.DIM, "inputs (causes + effects), even", ge=2),
    "n_samples": Setting(hparams.SAMPLES, "samples per domain", ge=1),
    "lr": Setting(hparams.LR, "Adam learning rate", gt=0),
    "steps": Setting(1000, "Adam steps of the penalized methods", ge=0),
    "penalty_weight": Setting(-1.0, "penalty weight (< 0: the reference grid, chosen on the validation domain)"),
    "anneal_iters": Setting(0, "steps at penalty weight 1 before the weight applies", ge=0),
    "irm_dummy": Setting("vector", "IRM's dummy: vector (IRM SEM code) or scalar (IRMv1)", choices=IRM_DUMMIES),
    "eval_every": Setting(250, "steps between evaluations", ge=1),
}
PRESETS = {
    "smoke": {},
    "paper": dict(repetitions=hparams.REPETITIONS, steps=hparams.STEPS, eval_every=10_000),
}


def _check(settings: dict) -> None:
    if settings["dim"] % 2:
        raise GensweepError(f"bad value for dim: {settings['dim']} (must be even)")


def stages(settings: dict) -> list[Stage]:
    """One stage: a config per (setting, method, repetition)."""
    configs = []
    for code in settings["settings"]:
        setting = setting_from_code(code)
        for method in settings["methods"]:
            for repetition in range(settings["repetitions"]):
                configs.append(
                    dict(
                        hidden=setting.hidden, hetero=setting.hetero, scrambled=setting.scrambled,
                        ones=settings["weights"] == "ones", dim=settings["dim"], n_samples=settings["n_samples"],
                        method=method, seed=repetition, lr=settings["lr"], steps=settings["steps"],
                        penalty_weight=settings["penalty_weight"], anneal_iters=settings["anneal_iters"],
                        irm_dummy=settings["irm_dummy"], eval_every=settings["eval_every"],
                    )
                )
    return [Stage("grid", sem_trainable, Grid(configs), metric="causal_error", mode="min", label=_label)]


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
    for setting in SEM_SETTINGS:
        for method in [m for m in methods.METHODS if m in set(frame["method"])]:
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
        [[r["setting"], r["description"], methods.get(r["method"]).display, _fmt(*r["causal"]), _fmt(*r["noncausal"]), r["regs"], r["runs"]] for r in rows],
    )
    errors_figure(rows, f"{out_dir}/errors.png")
    return (
        "Mean squared error of the learned coefficients on the causal (x) and non-causal (z) inputs, in the "
        "unscrambled coordinates, mean ± std over repetitions. Settings: F/P = fully / partially observed "
        "(hidden confounder), O/E = homo- / heteroskedastic, U/S = unscrambled / scrambled. "
        f"Weights: {_weights(frame)}. "
        "selected reg: the reference's ERM share reg = 1 / (1 + penalty weight) of the model picked on the "
        "validation domain, with how many runs picked it (0 = pure penalty, 1 = ERM). The thesis text available here has no numbers for this experiment.\n\n" + table
    )


def errors_figure(rows: list[dict], path: str) -> None:
    """Two panels (causal, non-causal error): grouped bars per setting, one bar per method, log scale, ± std."""
    codes = [s.code for s in SEM_SETTINGS if any(r["setting"] == s.code for r in rows)]
    names = [m for m in methods.METHODS if any(r["method"] == m for r in rows)]
    fig, axes = reports.figure(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(names))
    for ax, key, title in zip(axes, ("causal", "noncausal"), ("causal (x) coefficients", "non-causal (z) coefficients")):
        for i, method in enumerate(names):
            by_code = {r["setting"]: r[key] for r in rows if r["method"] == method}
            x = np.array([j for j, code in enumerate(codes) if code in by_code])
            means = np.array([by_code[c][0] for c in codes if c in by_code])
            stds = np.array([by_code[c][1] for c in codes if c in by_code])
            lower = np.minimum(stds, means * 0.999)  # keep the error bars above zero on the log axis
            ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=[lower, stds], capsize=2,
                   label=methods.get(method).display, color=COLORS.get(method))
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(codes)), codes)
        ax.set_ylabel("mean squared error")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Toy SEMs: coefficient error (mean ± std over repetitions)")
    reports.save_figure(fig, path)


def _label(config: dict) -> str:
    return f"{setting_of(config).code} {config['method']} seed={config['seed']}"


def _weights(frame) -> str:
    used = sorted({"ones" if bool(v) else "gaussian" for v in frame["ones"]}) if "ones" in frame else ["ones"]
    return "; ".join(f"{name}: {WEIGHTS[name]}" for name in used)


PIPELINE = Pipeline(
    name="toy-sem",
    description="Thesis §5.4.2 (IRM paper's toy SEMs): ERM, IRM, V-REx and MM-REx coefficient errors on 8 linear SEM settings",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=lambda settings, data_dir: NoData("toy-sem"),
    stages=stages,
    report=report,
    check=_check,
    run_defaults={"gpus_per_trial": 0.0},
)
