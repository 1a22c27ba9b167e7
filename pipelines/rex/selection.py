"""Model selection and result tables as DomainBed defines them: a report any domain-generalization pipeline can use.

The input is one record per (run, checkpoint), as DomainBed's results.jsonl
lines: the run's ``dataset``, ``method`` (DomainBed's algorithm),
``trial_seed``, ``hparams_seed``, ``test_envs`` (a tuple), the checkpoint's
``step`` and every environment's ``env{i}_in_acc`` and ``env{i}_out_acc``.
:func:`records` builds them from a sweep's Parquet trials and curves (so it
works on results copied off a cluster).

The three rules (``domainbed/model_selection.py``), per group (trial_seed,
dataset, method, test environment t; a run with two test environments
belongs to the group of each), over the group's hyperparameter draws
(``hparams_seed``):

- ``iid``, training-domain validation set: in each run with the single test
  environment t, the checkpoint with the best mean out-split accuracy of the
  other environments; the draw whose best is best.
- ``loo``, leave-one-domain-out cross-validation: at each checkpoint of a
  draw, the mean over the other environments j of env j's in-split accuracy
  in the run that held out {t, j} (a checkpoint missing one is skipped); the
  best (draw, checkpoint).
- ``oracle``, test-domain validation set: the last checkpoint of each run
  with the single test environment t (no early stopping), selected on env
  t's out-split.

Every rule reports env t's in-split accuracy of the selected (draw,
checkpoint). Ties go as in DomainBed: the earliest checkpoint, the highest
hparams_seed. Tables (``scripts/collect_results.py``): per environment the
mean and standard error (population std / sqrt(n)) over trial seeds, "Avg"
the mean of the environments' means; the averages table takes each trial's
mean over environments first.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from pipelines.engine import reports

RULES = {
    "iid": "training-domain validation set",
    "loo": "leave-one-domain-out cross-validation",
    "oracle": "test-domain validation set (oracle)",
}
RUN_KEYS = ("dataset", "method", "trial_seed", "hparams_seed", "test_envs")


def parse_envs(value) -> tuple[int, ...]:
    """A test-environment set from "0", "0,1", a list or a JSON list, as a tuple of ints."""
    if isinstance(value, str):
        text = value.strip()
        parts = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t.strip() != ""]
        return tuple(int(t) for t in parts)
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    return tuple(int(t) for t in value)


def records(trials: pd.DataFrame, curves: pd.DataFrame, keys: tuple[str, ...] = RUN_KEYS) -> pd.DataFrame:
    """One record per (run, checkpoint): each curve row with its run's ``keys`` (from the trials rows, by trial_key)."""
    runs = trials[["trial_key", *keys]].drop_duplicates("trial_key")
    accs = [c for c in curves.columns if c.startswith("env") and c.endswith("_acc")]
    out = curves[["trial_key", "step", *accs]].merge(runs, on="trial_key", how="inner")
    out["test_envs"] = out["test_envs"].map(parse_envs)
    return out.sort_values(["trial_key", "step"]).reset_index(drop=True)


def n_envs(frame: pd.DataFrame) -> int:
    """How many environments the records have (``env{i}_out_acc`` for i = 0, 1, ...; DomainBed counts until one is missing)."""
    n = 0
    while f"env{n}_out_acc" in frame.columns and frame[f"env{n}_out_acc"].notna().any():
        n += 1
    return n


def _argmax_first(values: list[float]) -> int:
    """Index of the first maximum, as Python's ``max`` (Q.argmax) finds it."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def run_acc(rule: str, run: pd.DataFrame, test_env: int, envs: int) -> dict | None:
    """``{val_acc, test_acc, step}`` of one draw's records in one group under ``rule``, or None (DomainBed's ``run_acc``)."""
    single = run[run["test_envs"].map(len) == 1].sort_values("step", kind="stable")
    test_in = f"env{test_env}_in_acc"
    if rule == "oracle":
        if single.empty:
            return None
        last = single.iloc[-1]
        return {"val_acc": float(last[f"env{test_env}_out_acc"]), "test_acc": float(last[test_in]), "step": int(last["step"])}
    if rule == "iid":
        if single.empty:
            return None
        val_cols = [f"env{i}_out_acc" for i in range(envs) if i != test_env]
        vals = single[val_cols].mean(axis=1).tolist()
        best = _argmax_first(vals)
        return {"val_acc": float(vals[best]), "test_acc": float(single[test_in].iloc[best]), "step": int(single["step"].iloc[best])}
    if rule == "loo":
        counts = single.groupby("step").size()
        tests = single.drop_duplicates("step").set_index("step")[test_in].loc[counts[counts == 1].index]
        pairs = run[run["test_envs"].map(len) == 2]
        others = pairs["test_envs"].map(lambda envs: (set(envs) - {test_env}).pop())
        val = pd.DataFrame(index=tests.index)
        for j in [j for j in range(envs) if j != test_env]:
            part = pairs[others == j].drop_duplicates("step", keep="last")  # DomainBed: the last record of a step wins
            val[j] = part.set_index("step")[f"env{j}_in_acc"].reindex(tests.index)
        scores = val.dropna().sum(axis=1) / (envs - 1)
        if scores.empty:
            return None
        step = scores.index[_argmax_first(scores.tolist())]
        return {"val_acc": float(scores[step]), "test_acc": float(tests[step]), "step": int(step)}
    raise ValueError(f"unknown selection rule {rule!r} (choose from {', '.join(RULES)})")


def sweep_accs(frame: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The selected draw of every group (trial_seed, dataset, method, test_env): its hparams_seed, step, val_acc, test_acc."""
    columns = ["dataset", "method", "trial_seed", "test_env", "hparams_seed", "step", "val_acc", "test_acc"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    envs_of = {d: n_envs(part) for d, part in frame.groupby("dataset")}
    member = frame.assign(test_env=frame["test_envs"]).explode("test_env")  # a run belongs to each of its test envs' groups
    member["test_env"] = member["test_env"].astype(int)
    out = []
    for (dataset, method, trial, test_env), group in member.groupby(["dataset", "method", "trial_seed", "test_env"], sort=True):
        picked = []
        for hparams_seed, run in group.groupby("hparams_seed", sort=True):
            acc = run_acc(rule, run, int(test_env), envs_of[dataset])
            if acc is not None:
                picked.append((hparams_seed, acc))
        if not picked:
            continue
        # DomainBed: sorted by val_acc (NaN lowest), reversed, first: the best, the highest hparams_seed among equals
        key = lambda item: -math.inf if math.isnan(item[1]["val_acc"]) else item[1]["val_acc"]
        hparams_seed, acc = sorted(picked, key=key)[::-1][0]
        out.append({"dataset": dataset, "method": method, "trial_seed": trial, "test_env": int(test_env),
                    "hparams_seed": hparams_seed, **acc})
    return pd.DataFrame(out, columns=columns)


def format_mean(values) -> tuple[float | None, float | None, str]:
    """collect_results.format_mean: 100 x mean and 100 x population std / sqrt(n), as "m ± e" ("X" when empty)."""
    values = [float(v) for v in values]
    if not values:
        return None, None, "X"
    mean, err = 100 * float(np.mean(values)), 100 * float(np.std(np.asarray(values) / np.sqrt(len(values))))
    return mean, err, f"{mean:.1f} ± {err:.1f}"


def table_cells(sweep: pd.DataFrame, dataset: str, methods: list[str], envs: int) -> dict[str, list[str]]:
    """Per method: one "mean ± se" cell per test environment and the Avg (mean of the means; "X" when one is missing)."""
    cells = {}
    for method in methods:
        row, means = [], []
        for env in range(envs):
            part = sweep[(sweep["dataset"] == dataset) & (sweep["method"] == method) & (sweep["test_env"] == env)]
            mean, _, text = format_mean(part["test_acc"])
            row.append(text)
            means.append(mean)
        row.append("X" if None in means else f"{sum(means) / len(means):.1f}")
        cells[method] = row
    return cells


def averages(sweep: pd.DataFrame, method: str, dataset: str) -> str:
    """The averages table's cell: per trial seed the mean over its test environments, then mean ± se over trials."""
    part = sweep[(sweep["dataset"] == dataset) & (sweep["method"] == method)]
    return format_mean(part.groupby("trial_seed")["test_acc"].mean())[2]


def rule_tables(frame: pd.DataFrame, env_names: dict[str, tuple[str, ...]], methods: list[str], names: dict[str, str],
                published: dict | None = None) -> tuple[str, dict[str, pd.DataFrame]]:
    """Markdown: for each rule a table per dataset (ours, and DomainBed's published row below each method where given)
    and an averages table; also each rule's selections (:func:`sweep_accs`)."""
    published = published or {}
    parts, sweeps = [], {}
    datasets = [d for d in env_names if d in set(frame["dataset"])]
    for rule, title in RULES.items():
        sweep = sweep_accs(frame, rule)
        sweeps[rule] = sweep
        parts.append(f"### Model selection: {title}\n")
        for dataset in datasets:
            envs = env_names[dataset]
            present = [m for m in methods if m in set(frame.loc[frame["dataset"] == dataset, "method"])]
            cells = table_cells(sweep, dataset, present, len(envs))
            rows = []
            for method in present:
                rows.append([names.get(method, method), *cells[method]])
                ref = published.get(rule, {}).get(dataset, {}).get(method)
                if ref:
                    rows.append([f"{names.get(method, method)} (DomainBed)", *ref])
            parts.append(f"**{dataset}** (test-domain accuracy %, mean ± s.e. over trials)\n\n"
                         + reports.markdown_table(["Algorithm", *envs, "Avg"], rows))
        rows = [[names.get(m, m), *[averages(sweep, m, d) for d in datasets]] for m in methods if m in set(frame["method"])]
        parts.append("**Averages** (per trial the mean over test environments, then mean ± s.e.)\n\n"
                     + reports.markdown_table(["Algorithm", *datasets], rows))
    return "\n".join(parts), sweeps


def selection_figure(sweeps: dict[str, pd.DataFrame], env_names: dict[str, tuple[str, ...]], methods: list[str],
                     names: dict[str, str], path: str, published: dict | None = None,
                     extra_envs: dict[str, int] | None = None) -> None:
    """Bars: test-domain accuracy (Avg over test environments; s.e. over trials of the trial averages) per selection
    rule and algorithm, one panel per dataset and per entry of ``extra_envs`` (dataset -> one test environment);
    DomainBed's published values as black marks."""
    published = published or {}
    panels = [(d, None) for d in env_names if any(d in set(s["dataset"]) for s in sweeps.values())]
    panels += [(d, e) for d, e in (extra_envs or {}).items() if any(d in set(s["dataset"]) for s in sweeps.values())]
    if not panels:
        return
    fig, axes = reports.figure(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    rules = list(RULES)
    for ax, (dataset, env) in zip(axes[0], panels):
        present = [m for m in methods if any(m in set(s.loc[s["dataset"] == dataset, "method"]) for s in sweeps.values())]
        width = 0.8 / max(1, len(present))
        for j, method in enumerate(present):
            means, errs, refs = [], [], []
            for rule in rules:
                part = sweeps[rule][(sweeps[rule]["dataset"] == dataset) & (sweeps[rule]["method"] == method)]
                if env is not None:
                    part = part[part["test_env"] == env]
                    mean, err, _ = format_mean(part["test_acc"])
                else:
                    mean, err, _ = format_mean(part.groupby("trial_seed")["test_acc"].mean())
                means.append(np.nan if mean is None else mean)
                errs.append(0.0 if err is None else err)
                ref = published.get(rule, {}).get(dataset, {}).get(method)
                refs.append(np.nan if not ref else float(str(ref[-1 if env is None else env]).split()[0]))
            x = np.arange(len(rules)) + (j - (len(present) - 1) / 2) * width
            ax.bar(x, means, width, yerr=errs, capsize=2, label=names.get(method, method))
            ax.plot(x, refs, "k_", ms=10, mew=2)
        ax.set_xticks(np.arange(len(rules)), ["training-domain\nvalidation", "leave-one-\ndomain-out", "oracle"])
        ax.set_ylabel("test-domain accuracy (%)")
        ax.set_ylim(0, 100)
        label = "Avg" if env is None else f"test env {env_names[dataset][env]}"
        ax.set_title(f"{dataset}: {label}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.text(0.01, 0.01, "black marks: DomainBed's published values (2020_10_06_7df6f06)", fontsize=7)
    reports.save_figure(fig, path)
