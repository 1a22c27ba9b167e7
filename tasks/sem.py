"""Trainable for the toy linear SEMs: one flat config -> coefficient errors via ``tune.report``.

Config keys (all JSON scalars):

- setting: ``hidden``, ``hetero``, ``scrambled`` (bools; see core.sem.data), ``ones``
  (identity W_xy / W_yz as in the IRM code, else Gaussian N(0, 1) / dim as in
  the REx code), ``dim`` (inputs, even),
  ``n_samples`` (per domain);
- ``seed``: the repetition; it alone draws the SEM and its data, so every
  method of a (setting, seed) sees the same data;
- ``method``: erm or a penalized core.methods entry (irm, vrex, mmrex);
- solver (core.sem.train.SolverConfig): ``lr``, ``steps``, ``penalty_weight``
  (< 0: the reference grid chosen on the validation domain), ``anneal_iters``,
  ``irm_dummy`` (vector or scalar), ``eval_every``.

Missing solver keys take the reference values. Reported metrics (flat floats,
one :class:`~tasks.report.Report` per eval, the last one ``final``): ``causal_error``,
``noncausal_error`` (core.sem.data.coefficient_errors on the [x, z] coordinates),
``val_mse``, ``train_mse``, ``penalty`` and ``selected_reg`` (the reference's
ERM share of the selected model; 1 for ERM, 0 for a pure penalty).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Callable

from core.sem.data import DEFAULT_DIM, DEFAULT_SAMPLES, LinearSEM, SemSetting, build_sem_task, coefficient_errors
from core.sem.train import LinearFit, SolverConfig, check_method, fit
from tasks.report import Report, tune_reporter


def setting_of(config: dict) -> SemSetting:
    """The SEM setting a config names."""
    return SemSetting(hidden=bool(config["hidden"]), hetero=bool(config["hetero"]), scrambled=bool(config["scrambled"]))


def solver_config(config: dict) -> SolverConfig:
    """The solver hyperparameters of a config (reference defaults for missing keys)."""
    kinds = {"lr": float, "steps": int, "penalty_weight": float, "anneal_iters": int, "irm_dummy": str, "eval_every": int}
    return SolverConfig(**{f.name: kinds[f.name](config[f.name]) for f in fields(SolverConfig) if f.name in config})


def fit_metrics(sem: LinearSEM, result: LinearFit) -> dict:
    """The flat metrics of a fit: errors on the original coordinates plus its fit statistics."""
    causal, noncausal = coefficient_errors(sem.causal_coefficients(), sem.to_original(result.beta))
    return {
        "causal_error": causal,
        "noncausal_error": noncausal,
        "val_mse": result.val_mse,
        "train_mse": result.train_mse,
        "penalty": result.penalty,
        "selected_reg": result.reg,
    }


def run_sem(config: dict, report: Callable[[Report], None]) -> dict:
    """Fit one (setting, seed, method); ``report`` gets a Report per eval, the last ``final``; returns the final metrics."""
    method = check_method(config["method"])
    solver = solver_config(config)
    sem, domains = build_sem_task(
        setting_of(config), int(config["seed"]), dim=int(config.get("dim", DEFAULT_DIM)),
        n_samples=int(config.get("n_samples", DEFAULT_SAMPLES)), ones=bool(config.get("ones", True)),
    )
    last_step = 0 if method == "erm" else solver.steps
    final: dict = {}

    def on_eval(step: int, result: LinearFit) -> None:
        nonlocal final
        final = {"step": step, **fit_metrics(sem, result)}
        report(Report(step=step, final=step == last_step, metrics=[final]))

    fit(method, domains, solver, on_eval)
    return final


def sem_trainable(config: dict, data=None) -> None:
    """Ray Tune function trainable; the SEMs generate their own data (``data`` is unused)."""
    run_sem(config, tune_reporter())
