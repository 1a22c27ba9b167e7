"""The Optuna studies of a search stage: their draws, what a crash left in them, and batched inserts.

Ray-free (the Tune searchers of :mod:`pipelines.engine.searchers` drive these).
With the random sampler, sample i of a study is the i-th draw of a seeded
stream shared by every study with the same ``paired_by`` values
(:func:`paired_draws`); a Search with explicit ``draws`` gives each study its
own (:func:`explicit_draws`). Finished draws are added to their study as
complete trials (:func:`add_trials`); TPE studies ask and tell as usual.
:func:`open_studies` creates or loads a search's studies, settles a crash
(:func:`prepare_study`) and lists what each still owes.
"""
from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from datetime import timezone
from typing import Any

from pipelines.engine.spec import GensweepError, Search, canonical_hash


@dataclass(frozen=True)
class Draw:
    """One configuration of a study drawn in advance: Optuna ``params`` (with their ``distributions``) and ``derived`` config values."""

    params: dict
    distributions: dict
    derived: dict


@dataclass
class StudyEntry:
    """One study of a search and what it still owes this run.

    ``todo`` holds, oldest first, what is left to hand out: a draw's sample
    index (a study with ``draws``), or None for a configuration the study is
    asked for (ask-and-tell, TPE). A failed configuration goes back on it.
    """

    name: str
    fixed: dict
    study: Any  # optuna.Study
    draws: list[Draw] | None
    todo: deque[int | None]


def make_sampler(kind: str, seed: int):
    """Optuna's RandomSampler or TPESampler with ``seed``."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r} (choose from random, tpe)")


def prepare_study(storage, name: str, direction: str, finished: list[dict] = (), metric: str = "", draws: list[Draw] | None = None) -> int:
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
        add_trials(study, [finished_trial(draws[int(r["sample"])], r.get(metric), int(r["sample"])) for r in missing])
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


def finished_trial(draw: Draw, value, sample: int):
    """Draw ``sample`` as a complete trial with ``value`` (FAIL when it is missing or NaN, which Optuna refuses)."""
    from optuna.trial import TrialState, create_trial

    ok = value is not None and not math.isnan(value)
    return create_trial(params=draw.params, distributions=draw.distributions, value=float(value) if ok else None,
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


def explicit_draws(search: Search, fixed: dict) -> list[Draw]:
    """The study's own draws (``search.draws``: dicts of params, distributions and derived), checked: ``budget`` of them."""
    draws = search.draws(fixed)
    if len(draws) != search.budget:
        raise GensweepError(f"the search's draws for {fixed} are {len(draws)}, its budget {search.budget}")
    return [Draw(dict(d["params"]), dict(d["distributions"]), dict(d.get("derived", {}))) for d in draws]


def paired_draws(search: Search, fixed: dict) -> list[Draw]:
    """The ``budget`` configurations (params and derived values) every study pairing with ``fixed`` trains, in order."""
    import optuna

    group = {k: fixed[k] for k in search.paired_by}
    seed = (search.seed + int(canonical_hash(group)[:8], 16)) % 2**31
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(search.budget):
        trial = study.ask()
        derived = search.space(trial)
        draws.append(Draw(dict(trial.params), dict(trial.distributions), dict(derived)))
    return draws


def open_studies(search: Search, storage, names: list[str], metric: str, mode: str, finished: dict[str, list[dict]]) -> list[StudyEntry]:
    """The studies ``names`` (one per ``search.studies`` entry), created or loaded and settled, with what each still owes.

    ``finished[name]`` holds the study's result rows. Paired studies (the
    random sampler, or explicit ``draws``) owe the samples with no row;
    ask-and-tell studies owe ``budget`` less their rows, from a sampler seeded
    past the trials they hold (a resumed study draws nothing twice).
    """
    import optuna

    direction = "maximize" if mode == "max" else "minimize"
    paired = search.sampler == "random" or search.draws is not None
    entries, draws_of = [], {}
    for i, (fixed, name) in enumerate(zip(search.studies, names)):
        rows = finished.get(name, [])
        draws = None
        if search.draws is not None:
            draws = explicit_draws(search, fixed)
        elif paired:
            group = canonical_hash({k: fixed[k] for k in search.paired_by})
            if group not in draws_of:
                draws_of[group] = paired_draws(search, fixed)
            draws = draws_of[group]
        n_trials = prepare_study(storage, name, direction, rows, metric, draws)
        sampler = make_sampler(search.sampler, search.seed + 1000 * i + n_trials)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        if draws is not None:
            done = {int(r["sample"]) for r in rows if r.get("sample") is not None}
            todo = deque(s for s in range(search.budget) if s not in done)
        else:
            todo = deque([None] * max(0, search.budget - len(rows)))
        entries.append(StudyEntry(name, fixed, study, draws, todo))
    return entries
