"""Many Optuna studies searched in blocks: one Tune trial trains K configurations at once.

Each *setting* (e.g. one (variant, p, method) of rex-vs-irm) has its own
Optuna study in the results' RDB storage and a budget of configurations. The
searcher asks a study for up to K trials, hands Tune one block trial holding
them, and tells the study each configuration's value when the block finishes.
A block that fails or is interrupted is told FAIL and its configurations are
sampled again, so every study ends with exactly ``budget`` COMPLETE trials,
one per Parquet row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class BlockSearch:
    """What to search: settings (shared config of each study), space, budget per study, block size."""

    settings: list[dict]
    study_name: Callable[[dict], str]  # readable, unique per setting
    space: Callable[[Any], dict]  # define-by-run: suggests on an Optuna trial, returns derived values
    budget: int
    block_size: int
    metric: str
    mode: str = "max"
    sampler: str = "random"  # or "tpe"
    seed: int = 0


def make_sampler(kind: str, seed: int):
    """Optuna's RandomSampler or TPESampler with ``seed``."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r} (choose from random, tpe)")


def prepare_study(storage, name: str, direction: str, finished: list[dict] = (), metric: str = "") -> int:
    """Create or load a study and settle the trials a crash left RUNNING (or WAITING); return its trial count.

    ``finished`` holds the study's result rows (Parquet). A left trial whose
    params all equal those of a row reached Parquet before the crash stopped
    its ``tell``: it is told COMPLETE with the row's ``metric``. Every other
    left trial is told FAIL (its configuration is sampled again).
    """
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    unmatched = list(finished)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        row = next((r for r in unmatched if trial.params and all(r.get(k) == v for k, v in trial.params.items())), None)
        if row is not None and row.get(metric) is not None and not math.isnan(row[metric]):  # tell() fails NaN too
            unmatched.remove(row)
            storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [float(row[metric])])
        else:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False))


def open_study(storage, name: str, direction: str, sampler_kind: str, seed: int, finished: list[dict] = (), metric: str = ""):
    """:func:`prepare_study`, then load it with a sampler seeded ``seed`` + its trial count.

    The offset means a resumed study does not draw the configurations it already tried again.
    """
    import optuna

    n_trials = prepare_study(storage, name, direction, finished, metric)
    return optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(sampler_kind, seed + n_trials))


def study_names(search: BlockSearch, prefix: str) -> list[str]:
    """The full study name of each setting, in order."""
    return [prefix + search.study_name(setting) for setting in search.settings]


def next_block_size(block_size: int, left_in_study: int, left_in_all: int, workers: int) -> int:
    """How many configurations the next block gets: ``block_size``, fewer near the end of the search.

    Guided scheduling: at most ceil(left_in_all / (2 * workers)), so the last
    blocks shrink and ``workers`` concurrent trials finish together instead of
    one long block running alone at the end.
    """
    return max(1, min(block_size, left_in_study, math.ceil(left_in_all / (2 * max(1, workers)))))


def block_searcher(
    search: BlockSearch, storage, remaining: dict[str, int], shared: dict, prefix: str,
    finished: dict[str, list[dict]], workers: int = 1,
):
    """A Tune Searcher yielding block configs ``{**setting, **shared, "study": name, "block": [...]}``.

    ``remaining[name]`` is how many configurations each study (named
    ``prefix + study_name(setting)``) still needs; ``finished[name]`` its
    result rows (see :func:`prepare_study`); ``workers`` how many trials run at
    once (see :func:`next_block_size`).
    """
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    direction = "maximize" if search.mode == "max" else "minimize"
    entries = []
    for i, (setting, name) in enumerate(zip(search.settings, study_names(search, prefix))):
        if remaining.get(name, 0) > 0:
            study = open_study(storage, name, direction, search.sampler, search.seed + 1000 * i, finished.get(name, []), search.metric)
            entries.append({"name": name, "setting": setting, "study": study, "left": remaining[name]})

    class OptunaBlockSearcher(Searcher):
        def __init__(self):
            super().__init__()  # blocks report per-model metrics; the study reads them itself
            self.live: dict[str, tuple[dict, list]] = {}

        def suggest(self, trial_id: str):
            entry = next((e for e in entries if e["left"] > 0), None)
            if entry is None:
                return None if self.live else Searcher.FINISHED
            k = next_block_size(search.block_size, entry["left"], sum(e["left"] for e in entries), workers)
            entry["left"] -= k
            trials, block = [], []
            for _ in range(k):
                trial = entry["study"].ask()
                derived = search.space(trial)
                trials.append(trial)
                block.append({**trial.params, **derived, "seed": trial.number, "optuna_trial": trial.number})
            self.live[trial_id] = (entry, trials)
            return {**entry["setting"], **shared, "study": entry["name"], "block": block}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
            entry, trials = self.live.pop(trial_id)
            if error or not (result or {}).get("done"):
                for trial in trials:
                    entry["study"].tell(trial, state=TrialState.FAIL)
                entry["left"] += len(trials)
                return
            for trial, row in zip(trials, result["models"]):
                entry["study"].tell(trial, row[search.metric])

        def save(self, checkpoint_path: str):
            pass  # the studies live in RDB storage; a resumed sweep reopens them

        def restore(self, checkpoint_path: str):
            pass

    return OptunaBlockSearcher()
