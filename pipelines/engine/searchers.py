"""The Tune searchers of a stage: they hand out configurations and hear back only after results are written.

Tune tells a searcher a trial is over *before* its callbacks run, so a
searcher that wrote to Optuna there would record a configuration whose result
row a crash could still lose. Here the searchers' ``on_trial_complete`` does
nothing; the result sink calls :meth:`record` once MLflow and Parquet hold the
configuration (``finals``), or with ``None`` when the trial failed. A failed
configuration is queued again (at most ``retries`` times per run), so a dead
worker node costs time, not results, however its death surfaces.

- :func:`grid_searcher`: an explicit list of configs (blocks allowed).
- :func:`study_searcher`: one Optuna study per fixed config of a
  :class:`~pipelines.engine.spec.Search`, in blocks of up to ``block_size``. With the
  random sampler, sample i of a study is the i-th draw of a seeded stream
  shared by every study with the same ``paired_by`` values: methods are
  trained on the same configurations (and seed i). The draws are known in
  advance, so nothing is asked of Optuna while the search runs: each finished
  draw is added to its method's study as a complete trial (params, value,
  ``sample``) in the write batch, after its row, and the studies stay
  complete Optuna records at one storage write per configuration. A resumed
  sweep runs exactly the samples with no result row and adds the rows a
  crash kept from their study. TPE studies ask and tell as usual, from a
  sampler seeded past the trials they already hold. A Search with explicit
  ``draws`` is recorded and resumed as paired draws are, each study with its own.
"""
from __future__ import annotations

import json
import math
from collections import deque
from datetime import timezone
from typing import Any

from pipelines.engine.spec import Search, canonical_hash, trial_key
from tasks.report import units


def make_sampler(kind: str, seed: int):
    """Optuna's RandomSampler or TPESampler with ``seed``."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r} (choose from random, tpe)")


def prepare_study(storage, name: str, direction: str, finished: list[dict] = (), metric: str = "", draws: list[dict] | None = None) -> int:
    """Create or load a study and settle what a crash left; return its trial count.

    ``finished`` holds the study's result rows (Parquet). Trials left RUNNING
    (or WAITING) by an ask-and-tell study: one whose params all equal those of
    a row reached Parquet before the crash stopped its ``tell`` and is told
    COMPLETE with the row's ``metric``; every other is told FAIL (its
    configuration is run or sampled again). Paired studies (``draws``, see
    :func:`paired_draws`): rows whose ``sample`` the study lacks (a crash came
    between the row and its record) are added as trials of their draw.
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
    if draws is not None:
        recorded = {t.user_attrs.get("sample") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))}
        missing = [r for r in finished if r.get("sample") is not None and int(r["sample"]) not in recorded]
        add_trials(study, [_finished_trial(draws[int(r["sample"])]["params"], draws[int(r["sample"])]["distributions"],
                                           r.get(metric), int(r["sample"])) for r in missing])
    return len(study.get_trials(deepcopy=False))


def add_trials(study, trials: list) -> None:
    """``study.add_trials(trials)`` for finished trials, as one multi-row insert per table on an RDBStorage.

    Optuna adds a trial with a dozen ORM round trips and a commit (and counts
    the study's trials each time); a write batch of thousands of
    configurations goes in one transaction of five multi-row inserts into
    Optuna's own tables (its SQLAlchemy models), writing the rows
    ``add_trials`` writes for a new finished trial (tested equal to it).
    Other storages, or an Optuna without these models, take ``study.add_trials``.
    """
    if not trials:
        return
    try:
        import sqlalchemy as sa
        from optuna.distributions import distribution_to_json
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        backend = getattr(study._storage, "_backend", study._storage)
        rdb = isinstance(backend, RDBStorage)
    except (ImportError, AttributeError):
        rdb = False
    if not rdb:
        study.add_trials(trials)
        return

    def utc(value):
        return None if value is None else value.astimezone(timezone.utc).replace(tzinfo=None)

    study_id = study._study_id
    with _create_scoped_session(backend.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        trial_table = models.TrialModel.__table__
        first = session.execute(sa.select(sa.func.count()).select_from(trial_table).where(trial_table.c.study_id == study_id)).scalar()
        session.execute(trial_table.insert(), [
            {"number": first + i, "study_id": study_id, "state": t.state, "datetime_start": utc(t.datetime_start),
             "datetime_complete": utc(t.datetime_complete)} for i, t in enumerate(trials)
        ])
        ids = dict(session.execute(sa.select(trial_table.c.number, trial_table.c.trial_id).where(
            trial_table.c.study_id == study_id, trial_table.c.number >= first)).all())
        params, values, attrs = [], [], []
        for i, t in enumerate(trials):
            trial_id = ids[first + i]
            params += [{"trial_id": trial_id, "param_name": name, "param_value": t.distributions[name].to_internal_repr(value),
                        "distribution_json": distribution_to_json(t.distributions[name])} for name, value in t.params.items()]
            if t.value is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(t.value)
                values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
            attrs += [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in t.user_attrs.items()]
        for model, rows in ((models.TrialParamModel, params), (models.TrialValueModel, values), (models.TrialUserAttributeModel, attrs)):
            if rows:
                session.execute(model.__table__.insert(), rows)


def _finished_trial(params: dict, distributions: dict, value, sample: int):
    """A complete trial (FAIL when the value is missing or NaN, which Optuna refuses as a value)."""
    from optuna.trial import TrialState, create_trial

    ok = value is not None and not math.isnan(value)
    return create_trial(params=params, distributions=distributions, value=float(value) if ok else None,
                        state=TrialState.COMPLETE if ok else TrialState.FAIL, user_attrs={"sample": sample})


def next_block_size(block_size: int, left_in_study: int, left_in_all: int, workers: int) -> int:
    """How many configurations the next block gets: ``block_size``, fewer near the end of the search.

    Guided scheduling: at most ceil(left_in_all / (2 * workers)), so the last
    blocks shrink and ``workers`` concurrent trials finish together instead of
    one long block running alone at the end; but not below a quarter of
    ``block_size`` (a study's last block excepted): each trial costs the driver
    a fixed ~0.1 s, and blocks shrinking to one configuration would add about
    ``2 * workers * ln(block_size)`` trials to every search.
    """
    floor = math.ceil(block_size / 4)
    return max(1, min(block_size, left_in_study, max(floor, math.ceil(left_in_all / (2 * max(1, workers))))))


def explicit_draws(search: Search, fixed: dict) -> list[dict]:
    """The study's own draws (``search.draws``), checked: ``budget`` of them, each with params, distributions and derived."""
    from pipelines.engine.spec import GensweepError

    draws = search.draws(fixed)
    if len(draws) != search.budget:
        raise GensweepError(f"the search's draws for {fixed} are {len(draws)}, its budget {search.budget}")
    return [{"params": dict(d["params"]), "distributions": dict(d["distributions"]), "derived": dict(d.get("derived", {}))} for d in draws]


def paired_draws(search: Search, fixed: dict) -> list[dict]:
    """The ``budget`` configurations (params and derived values) every study pairing with ``fixed`` trains, in order."""
    import optuna

    group = {k: fixed[k] for k in search.paired_by}
    seed = (search.seed + int(canonical_hash(group)[:8], 16)) % 2**31
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(search.budget):
        trial = study.ask()
        derived = search.space(trial)
        draws.append({"params": dict(trial.params), "derived": dict(derived), "distributions": dict(trial.distributions)})
    return draws


def _searcher_base():
    from ray.tune.search import Searcher

    class StageSearcher(Searcher):
        """Base: ``live`` trials, a retry budget, and the no-op Tune hooks (see the module docstring)."""

        def __init__(self, retries: int):
            super().__init__()
            self.live: dict[str, Any] = {}
            self.retries, self.failures = retries, {}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
            pass  # the sink calls record() after writing

        def save(self, checkpoint_path: str):
            pass  # nothing to save: a resumed sweep recomputes what is left from the Parquet rows

        def restore(self, checkpoint_path: str):
            pass

        def _retry(self, key: str) -> bool:
            self.failures[key] = self.failures.get(key, 0) + 1
            return self.failures[key] <= self.retries

    return StageSearcher


def grid_searcher(configs: list[dict], retries: int = 2):
    """A searcher handing out exactly ``configs`` (each maybe a block), then FINISHED."""
    base = _searcher_base()

    class GridSearcher(base):
        def __init__(self):
            super().__init__(retries)
            self.pending = deque(configs)

        def suggest(self, trial_id: str):
            if not self.pending:
                return None if self.live else base.FINISHED
            config = self.pending.popleft()
            self.live[trial_id] = config
            return dict(config)

        def record(self, trial_id: str, finals: list[dict] | None) -> bool:
            """Note the trial's end; True when a failed trial's configuration was queued again."""
            config = self.live.pop(trial_id, None)
            if config is not None and finals is None and self._retry(trial_key(config)):
                self.pending.append(config)
                return True
            return False

    return GridSearcher()


def study_searcher(
    search: Search, storage, names: list[str], shared: dict, metric: str, mode: str,
    finished: dict[str, list[dict]], workers: int = 1, retries: int = 2,
):
    """A searcher over the studies ``names`` (one per ``search.studies`` entry) until each has its budget.

    ``finished[name]`` holds the study's result rows; ``shared`` is merged
    into every config; ``workers`` is how many trials run at once (see
    :func:`next_block_size`). Configs carry ``study`` and ``seed``, and
    ``sample`` when paired, ``optuna_trial`` (the trial number) otherwise.
    """
    from optuna.trial import TrialState

    base = _searcher_base()
    direction = "maximize" if mode == "max" else "minimize"
    paired = search.sampler == "random" or search.draws is not None
    entries, draws_of = [], {}
    for i, (fixed, name) in enumerate(zip(search.studies, names)):
        rows = finished.get(name, [])
        group = canonical_hash({k: fixed[k] for k in search.paired_by})
        if search.draws is not None:
            draws = explicit_draws(search, fixed)
        else:
            if paired and group not in draws_of:
                draws_of[group] = paired_draws(search, fixed)
            draws = draws_of.get(group)
        n_trials = prepare_study(storage, name, direction, rows, metric, draws)
        import optuna

        sampler = make_sampler(search.sampler, search.seed + 1000 * i + n_trials)  # resumed: no old draws again
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        entry = {"name": name, "fixed": fixed, "study": study}
        if paired:
            done = {int(r["sample"]) for r in rows if r.get("sample") is not None}
            entry["draws"] = draws
            entry["todo"] = deque(s for s in range(search.budget) if s not in done)
        else:
            entry["todo"] = max(0, search.budget - len(rows))
        entries.append(entry)

    def left(entry) -> int:
        return len(entry["todo"]) if paired else entry["todo"]

    class StudySearcher(base):
        def __init__(self):
            super().__init__(retries)

        def suggest(self, trial_id: str):
            entry = next((e for e in entries if left(e) > 0), None)
            if entry is None:
                return None if self.live else base.FINISHED
            k = next_block_size(search.block_size, left(entry), sum(left(e) for e in entries), workers)
            trials, block = [], []
            for _ in range(k):
                if paired:  # nothing asked of Optuna: the draw is recorded with its result
                    sample = entry["todo"].popleft()
                    trial = entry["draws"][sample]  # a draw stands in for the Optuna trial
                    unit = {"seed": sample, **trial["params"], **trial["derived"], "sample": sample}
                else:
                    entry["todo"] -= 1
                    trial = entry["study"].ask()
                    derived = search.space(trial)
                    unit = {**trial.params, **derived, "seed": trial.number, "optuna_trial": trial.number}
                trials.append(trial)
                block.append(unit)
            self.live[trial_id] = (entry, trials, block)
            head = {**entry["fixed"], **shared, "study": entry["name"]}
            return {**head, **block[0]} if search.block_size == 1 else {**head, "block": block}

        def record(self, trial_id: str, finals: list[dict] | None) -> bool:
            """Tell the studies the trial's results (or FAIL); True when failed configurations were queued again."""
            if trial_id not in self.live:
                return False
            entry, trials, block = self.live.pop(trial_id)
            if finals is not None and paired:
                add_trials(entry["study"], [
                    _finished_trial(draw["params"], draw["distributions"], row.get(metric), unit["sample"])
                    for draw, unit, row in zip(trials, block, finals)
                ])
                return False
            if finals is not None:
                for trial, row in zip(trials, finals):
                    value = row.get(metric)
                    if value is None or math.isnan(value):  # Optuna refuses NaN: the row stays the record
                        entry["study"].tell(trial, state=TrialState.FAIL)
                    else:
                        entry["study"].tell(trial, float(value))
                return False
            requeued = False
            for trial, unit in zip(trials, block):
                if not paired:  # a paired draw that failed is not recorded; it runs again or stays missing
                    entry["study"].tell(trial, state=TrialState.FAIL)
                if self._retry(f"{entry['name']}/{unit.get('sample', unit.get('optuna_trial'))}"):
                    requeued = True
                    if paired:
                        entry["todo"].append(unit["sample"])
                    else:
                        entry["todo"] += 1
            return requeued

    return StudySearcher()


def remaining_units(configs: list[dict], done: set[str]) -> list[dict]:
    """``configs`` without their finished configurations (blocks keep their unfinished entries)."""
    todo = []
    for config in configs:
        if "block" in config:
            left = [entry for entry, unit in zip(config["block"], units(config)) if trial_key(unit) not in done]
            if left:
                todo.append({**config, "block": left})
        elif trial_key(config) not in done:
            todo.append(config)
    return todo
