"""The Tune searchers of a stage: they hand out configs and hear back only after results are written.

Tune tells a searcher a trial is over *before* its callbacks run, so a
searcher that wrote to Optuna there would record a configuration whose result
row a crash could still lose. Here the searchers' ``on_trial_complete`` does
nothing; the result sink calls :meth:`~StageSearcher.record` once MLflow and
Parquet hold the trial's configurations (with their final metrics), or with
``None`` when the trial failed. A failed config is queued again (at most
``retries`` times per run), so a dead worker node costs time, not results,
however its death surfaces.

- :class:`GridSearcher`: an explicit list of configs (blocks allowed).
- :class:`StudySearcher`: one Optuna study per fixed config of a
  :class:`~pipelines.engine.spec.Search` (:mod:`pipelines.engine.studies`),
  in blocks of up to ``block_size``. Paired draws are known in advance, so
  nothing is asked of Optuna while the search runs: each finished draw is
  added to its study as a complete trial (params, value, ``sample``) in the
  write batch, after its row, and the studies stay complete Optuna records at
  one storage write per configuration. A resumed sweep runs exactly the
  samples with no result row. TPE studies ask and tell as usual.

This module imports Ray Tune: the runner imports it only when a stage runs.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher

from pipelines.engine.spec import Search, trial_key
from pipelines.engine.studies import StudyEntry, add_trials, finished_trial, next_block_size, open_studies


class StageSearcher(Searcher):
    """Base: ``live`` trials, a retry budget, and the no-op Tune hooks (see the module docstring)."""

    def __init__(self, retries: int):
        super().__init__()
        self.live: dict[str, Any] = {}
        self.retries = retries
        self.failures: dict[str, int] = {}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        pass  # the sink calls record() after writing

    def save(self, checkpoint_path: str):
        pass  # nothing to save: a resumed sweep recomputes what is left from the Parquet rows

    def restore(self, checkpoint_path: str):
        pass

    def record(self, trial_id: str, finals: list[dict] | None) -> bool:
        """Note the trial's end: ``finals`` its configurations' final metrics, None when it failed.

        True when a failed trial's configurations were queued again.
        """
        raise NotImplementedError

    def _retry(self, key: str) -> bool:
        self.failures[key] = self.failures.get(key, 0) + 1
        return self.failures[key] <= self.retries


class GridSearcher(StageSearcher):
    """Hands out exactly ``configs`` (each maybe a block), then FINISHED."""

    def __init__(self, configs: list[dict], retries: int = 2):
        super().__init__(retries)
        self.pending = deque(configs)

    def suggest(self, trial_id: str):
        if not self.pending:
            return None if self.live else Searcher.FINISHED
        config = self.pending.popleft()
        self.live[trial_id] = config
        return dict(config)

    def record(self, trial_id: str, finals: list[dict] | None) -> bool:
        config = self.live.pop(trial_id, None)
        if config is not None and finals is None and self._retry(trial_key(config)):
            self.pending.append(config)
            return True
        return False


@dataclass
class Handout:
    """A block handed to a Tune trial: its study and, per configuration, its draw (or Optuna trial) and its own keys (``block``)."""

    entry: StudyEntry
    trials: list  # studies.Draw when paired, optuna.Trial when asked
    block: list[dict]


class StudySearcher(StageSearcher):
    """Hands out the configurations of the studies ``names`` (one per ``search.studies`` entry) until each has its budget.

    ``finished[name]`` holds the study's result rows; ``shared`` is merged
    into every config; ``workers`` is how many trials run at once (see
    :func:`~pipelines.engine.studies.next_block_size`). Configs carry
    ``study`` and ``seed``, and ``sample`` when paired, ``optuna_trial`` (the
    trial number) otherwise.
    """

    def __init__(self, search: Search, storage, names: list[str], shared: dict, metric: str, mode: str,
                 finished: dict[str, list[dict]], workers: int = 1, retries: int = 2):
        super().__init__(retries)
        self.search, self.shared, self.workers = search, shared, workers
        self.objective = metric  # the row value told to Optuna (Searcher.metric stays unset: Tune would look for it in results)
        self.entries = open_studies(search, storage, names, metric, mode, finished)

    def suggest(self, trial_id: str):
        entry = next((e for e in self.entries if e.todo), None)
        if entry is None:
            return None if self.live else Searcher.FINISHED
        k = next_block_size(self.search.block_size, len(entry.todo), sum(len(e.todo) for e in self.entries), self.workers)
        trials, block = [], []
        for _ in range(k):
            sample = entry.todo.popleft()
            if sample is not None:  # a draw: nothing asked of Optuna, it is recorded with its result
                draw = entry.draws[sample]
                trials.append(draw)
                block.append({"seed": sample, **draw.params, **draw.derived, "sample": sample})
            else:
                trial = entry.study.ask()
                derived = self.search.space(trial)
                trials.append(trial)
                block.append({**trial.params, **derived, "seed": trial.number, "optuna_trial": trial.number})
        self.live[trial_id] = Handout(entry, trials, block)
        head = {**entry.fixed, **self.shared, "study": entry.name}
        return {**head, **block[0]} if self.search.block_size == 1 else {**head, "block": block}

    def record(self, trial_id: str, finals: list[dict] | None) -> bool:
        """Tell the studies the trial's results (or FAIL); True when failed configurations were queued again."""
        if trial_id not in self.live:
            return False
        handout = self.live.pop(trial_id)
        entry, paired = handout.entry, handout.entry.draws is not None
        if finals is not None and paired:
            add_trials(entry.study, [finished_trial(draw, row.get(self.objective), own["sample"])
                                     for draw, own, row in zip(handout.trials, handout.block, finals)])
            return False
        if finals is not None:
            for trial, row in zip(handout.trials, finals):
                value = row.get(self.objective)
                if value is None or math.isnan(value):  # Optuna refuses NaN: the row stays the record
                    entry.study.tell(trial, state=TrialState.FAIL)
                else:
                    entry.study.tell(trial, float(value))
            return False
        requeued = False
        for trial, own in zip(handout.trials, handout.block):
            if not paired:  # a paired draw that failed is not recorded; it runs again or stays missing
                entry.study.tell(trial, state=TrialState.FAIL)
            if self._retry(f"{entry.name}/{own.get('sample', own.get('optuna_trial'))}"):
                requeued = True
                entry.todo.append(own["sample"] if paired else None)
        return requeued
