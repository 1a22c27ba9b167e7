"""Run a pipeline's sweep on Ray Tune, stage by stage, skipping finished configurations.

The runner knows no experiment: the pipeline loads its data (so bad data
fails before Ray starts) and declares its stages; the runner ships the data
to the trials through the object store, runs one Tuner per stage (its grid
or its Optuna studies, its optional scheduler) and records results through
:mod:`pipelines.engine.sink`. Every config gets ``data`` (the data's fingerprint) and
``stage``; its hash names its result row, so a re-run finds finished work.
A stage left incomplete (interrupted, failed) stops the sweep: later stages
wait for the next run. A follow-up stage (its plan a function of the earlier
stages' rows, see :mod:`pipelines.engine.followup`) is planned once every
stage before it is complete, from the rows Parquet holds then; a resumed
sweep plans it again from the same rows and finds what it finished.
Ray Tune and the searcher and sink modules built on it are imported only
when a stage runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.engine.dblock import sqlite_lock
from pipelines.engine.progress import Progress
from pipelines.engine.record import check_code_version, describe_data, save_sweep_args, update_sweep_record
from pipelines.engine.runtime import init_ray, trial_resources
from pipelines.engine.spec import GensweepError, Grid, NoData, Pipeline, Search, Stage, disk_full_error, is_disk_full, sweep_id, trial_key
from pipelines.engine.store import ResultStore
from pipelines.engine.tracking import MlflowSweep, default_tracking_uri
from tasks.report import configurations

# Checkpointing trainables (rl) keep one checkpoint each; Tune then snapshots its state at every checkpoint
# and warns each time. The snapshot is what makes a restarted trial resume: keep it, drop the warning.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass
class Sweep:
    """Where a sweep's results go and what it runs."""

    pipeline: Pipeline
    preset: str
    settings: dict
    results: str
    data_dir: str | None = None
    address: str | None = None
    mlflow_uri: str | None = None
    optuna_storage: str | None = None
    num_cpus: int | None = None
    quiet: bool = False
    overrides: list[str] = field(default_factory=list)  # the --set arguments, recorded for `gensweep resume`
    expect_id: str | None = None  # resume: fail unless the settings still give this sweep id
    allow_code_change: bool = False  # resume results recorded by another code version (pipelines.engine.codeversion)
    id: str = field(init=False, default="")


@dataclass
class SweepSummary:
    """What one run of a sweep did, in configurations: in all, done before (``skipped``), run now, failed, finished.

    ``complete``: every stage finished; ``compacted``: result files merged at the end (0: none).
    """

    pipeline: str
    sweep: str
    total: int
    skipped: int
    results: str
    ran: int = 0
    failed: int = 0
    finished: int = 0
    complete: bool = False
    compacted: int = 0


@dataclass
class StagePlan:
    """One stage of this run: its configs (grid) or studies (search), how many it owes, and how many in all."""

    stage: Stage
    total: int
    todo: int
    grid: list[dict] = field(default_factory=list)
    study_names: list[str] = field(default_factory=list)
    finished: dict[str, list[dict]] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)


def _optuna_url(sweep: Sweep) -> str:
    return sweep.optuna_storage or f"sqlite:///{Path(sweep.results).resolve() / 'optuna.db'}"


def _optuna_storage(sweep: Sweep):
    import optuna

    url = _optuna_url(sweep)
    try:
        with sqlite_lock(url, "Optuna database"):  # sweeps started together: one creates the schema
            return optuna.storages.RDBStorage(url)
    except GensweepError:
        raise
    except Exception as exc:  # SQLAlchemy raises driver-specific errors
        raise GensweepError(f"cannot open Optuna storage {url}: {str(exc).splitlines()[0]}") from None


def _study_names(search: Search, prefix: str) -> list[str]:
    names = [prefix + (f"/{search.study_name(fixed)}" if search.study_name(fixed) else "") for fixed in search.studies]
    if len(set(names)) != len(names):
        raise GensweepError(f"study names of {prefix} are not unique: give the Search a study_name that tells them apart")
    return names


def earlier_rows(rows, stages: list[Stage]) -> dict:
    """Stage name -> its finished rows (sorted by trial key): what a follow-up stage's plan is built from."""
    return {s.name: _stage_rows(rows, s.name).sort_values("trial_key").reset_index(drop=True) if len(rows) else rows for s in stages}


def resolve_plan(stage: Stage, earlier: dict) -> Grid | Search:
    """The stage's Grid or Search: its plan, or its plan built from the earlier stages' rows."""
    if not stage.followup:
        return stage.plan
    plan = stage.plan(earlier)
    if not isinstance(plan, (Grid, Search)):
        raise GensweepError(f"stage {stage.name}: its plan function returned {type(plan).__name__}, not a Grid or a Search")
    return plan


def plan_stage(stage: Stage, sweep: Sweep, tags: dict, rows, done: set[str], earlier: dict | None = None) -> StagePlan:
    """What ``stage`` still has to run, given the sweep's finished keys and result rows (and, follow-up, the earlier stages' rows)."""
    stage = replace(stage, plan=resolve_plan(stage, earlier or {}))
    if isinstance(stage.plan, Grid):
        configs = [{**c, **tags} for c in stage.plan.configs]
        keys = {trial_key(c) for config in configs for c in configurations(config)}
        todo = remaining_configs(configs, done)
        return StagePlan(stage, len(keys), sum(len(configurations(config)) for config in todo), grid=todo, keys=keys)
    search = stage.plan
    names = _study_names(search, f"{sweep.pipeline.name}/{sweep.id}/{stage.name}")
    mine = _stage_rows(rows, stage.name)
    finished = {name: group.to_dict("records") for name, group in mine.groupby("study")} if len(mine) else {}
    todo = sum(max(0, search.budget - len(finished.get(name, []))) for name in names)
    return StagePlan(stage, search.budget * len(names), todo, study_names=names, finished=finished)


def remaining_configs(configs: list[dict], done: set[str]) -> list[dict]:
    """``configs`` without their finished configurations (blocks keep their unfinished entries)."""
    todo = []
    for config in configs:
        if "block" in config:
            left = [entry for entry, c in zip(config["block"], configurations(config)) if trial_key(c) not in done]
            if left:
                todo.append({**config, "block": left})
        elif trial_key(config) not in done:
            todo.append(config)
    return todo


def _stage_rows(rows, stage: str):
    """The result rows of one stage (an empty frame when there are none)."""
    return rows[rows["stage"] == stage] if "stage" in rows else rows.iloc[0:0]


def _complete(plan: StagePlan, store: ResultStore, sweep: Sweep) -> bool:
    if isinstance(plan.stage.plan, Grid):
        return plan.keys <= store.finished_keys(sweep.pipeline.name, sweep.id)
    mine = _stage_rows(store.read("trials", sweep.pipeline.name, sweep.id), plan.stage.name)
    counts = mine.groupby("study").size().to_dict() if len(mine) else {}
    return all(counts.get(name, 0) >= plan.stage.plan.budget for name in plan.study_names)


def run_sweep(sweep: Sweep) -> SweepSummary:
    """Run (or resume) a sweep to completion; return what it did."""
    pipeline = sweep.pipeline
    store = ResultStore.open(sweep.results)
    store.check_writable()
    if sweep.preset in pipeline.needs_data_dir and not sweep.data_dir:  # else the embedded stand-in would be swept
        raise GensweepError(f"{pipeline.name}'s preset {sweep.preset} is for real data files, not the embedded stand-in: "
                            "give --data-dir DIR (`gensweep download` fetches MNIST)")
    data = pipeline.load_data(sweep.settings, sweep.data_dir)
    if isinstance(data, NoData) and sweep.data_dir:
        raise GensweepError(f"{pipeline.name} generates its own data ({data.fingerprint}): --data-dir is not used; leave it out")
    note = data.data_note() if hasattr(data, "data_note") else None  # the data's own check (no images, bad labels): refused here
    if note and not sweep.quiet:
        print(f"[{pipeline.name}] note: {note}", flush=True)
    stages = pipeline.stages(sweep.settings)
    sweep.id = sweep_id(pipeline.name, sweep.preset, sweep.settings, data.fingerprint, pipeline.all_settings())
    if sweep.expect_id and sweep.id != sweep.expect_id:
        raise GensweepError(
            f"the recorded command of sweep {sweep.expect_id} now gives sweep {sweep.id} "
            "(preset or data changed since); run it with `gensweep run` to start that sweep"
        )
    check_code_version(sweep.results, sweep.id, bool(store.finished_keys(pipeline.name, sweep.id)), sweep.allow_code_change)
    tracking = MlflowSweep(
        sweep.mlflow_uri or default_tracking_uri(sweep.results), pipeline.name, sweep.id, {"preset": sweep.preset, **sweep.settings},
        tags={"gensweep.data": describe_data(data)},
    )
    store.recover(pipeline.name, sweep.id)  # a `gensweep compact` killed midway: finish or undo it
    done = store.finished_keys(pipeline.name, sweep.id)
    tracking.drop_unrecorded(done)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if any(not isinstance(stage.plan, Grid) for stage in stages):  # a search may come: its storage answers before Ray starts
        _optuna_storage(sweep)
    init_ray(sweep.address, sweep.num_cpus)
    save_sweep_args(store, sweep, data)  # once storage, tracking and Ray all answer: `gensweep resume` re-runs this

    tags = lambda stage: {"data": data.fingerprint, "stage": stage.name}
    rows = store.read("trials", pipeline.name, sweep.id)
    plans: list[StagePlan | None] = []  # None: a follow-up stage whose earlier stages are not complete yet
    for i, stage in enumerate(stages):
        ready = not stage.followup or all(p is not None and not p.todo for p in plans)
        plans.append(plan_stage(stage, sweep, tags(stage), rows, done, earlier_rows(rows, stages[:i])) if ready else None)
    known = [p for p in plans if p is not None]
    total, todo = sum(p.total for p in known), sum(p.todo for p in known)
    waiting = [stage.name for stage, p in zip(stages, plans) if p is None]
    summary = SweepSummary(pipeline.name, sweep.id, total, total - todo, sweep.results)
    if not sweep.quiet:
        later = f"; then stage{'s' if len(waiting) > 1 else ''} {', '.join(waiting)}, built from their results" if waiting else ""
        print(f"[{pipeline.name}] sweep {sweep.id}: {todo} of {total} configurations to run ({total - todo} already done{later})", flush=True)
    if not todo and not waiting:
        tracking.finish("FINISHED")
        update_sweep_record(store, sweep.id, total=total, finished=total, complete=True)
        return replace(summary, finished=total, complete=True)

    progress = Progress(pipeline.name, total, done=total - todo, quiet=sweep.quiet)
    ran, stopped = 0, False
    for i, stage in enumerate(stages):
        if plans[i] is None:  # every stage before it is complete now: build it from their rows
            rows = store.read("trials", pipeline.name, sweep.id)
            plans[i] = plan = plan_stage(stage, sweep, tags(stage), rows, store.finished_keys(pipeline.name, sweep.id),
                                         earlier_rows(rows, stages[:i]))
            progress.total += plan.total
            progress.done += plan.total - plan.todo
            summary.total += plan.total
            summary.skipped += plan.total - plan.todo
            if not sweep.quiet:
                print(f"[{pipeline.name}] stage {stage.name}: {plan.todo} of {plan.total} configurations to run, built from "
                      f"the results of {', '.join(s.name for s in stages[:i])}", flush=True)
        plan = plans[i]
        if plan.todo:
            ran += _run_stage(plan, sweep, data, store, tracking, progress)
            if not _complete(plan, store, sweep):
                stopped = True
                break  # interrupted or failed: later stages wait for the next run
    finished = len(store.finished_keys(pipeline.name, sweep.id))
    complete = not stopped and all(p is not None for p in plans) and finished >= summary.total
    merged = _compact_finished(store, sweep) if complete else 0
    tracking.finish("FINISHED" if complete else "KILLED")
    update_sweep_record(store, sweep.id, total=summary.total, finished=finished, complete=complete)
    return replace(summary, ran=ran, failed=progress.failed, finished=finished, complete=complete, compacted=merged)


COMPACT_FILES = 32  # a finished sweep with more result files than this is compacted at once


def _compact_finished(store: ResultStore, sweep: Sweep) -> int:
    """Merge a finished sweep's Parquet files (``gensweep compact``) when it left more than COMPACT_FILES; return how many."""
    if len(store.files("trials", sweep.pipeline.name, sweep.id)) <= COMPACT_FILES:
        return 0
    merged = store.compact(sweep.pipeline.name, sweep.id)["trials"]
    if not sweep.quiet:
        print(f"[{sweep.pipeline.name}] compacted {merged} result files into one per table", flush=True)
    return merged


def _run_stage(plan: StagePlan, sweep: Sweep, data, store: ResultStore, tracking, progress: Progress) -> int:
    """One Tuner over the stage's remaining work; returns how many configurations it recorded."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from pipelines.engine.searchers import GridSearcher, StudySearcher
    from pipelines.engine.sink import ResultSink

    stage, settings = plan.stage, sweep.settings
    workers = _max_concurrent(sweep)
    retries = int(settings["max_failures"])
    if isinstance(stage.plan, Grid):
        searcher = GridSearcher(plan.grid, retries)
    else:
        tags = {"data": data.fingerprint, "stage": stage.name}
        searcher = StudySearcher(
            stage.plan, _optuna_storage(sweep), plan.study_names, tags, stage.metric, stage.mode, plan.finished, workers, retries
        )
    sink = ResultSink(stage, sweep.pipeline.name, sweep.id, store, tracking, searcher, progress, optuna_url=_optuna_url(sweep))
    resources = trial_resources(settings["cpus_per_trial"], settings["gpus_per_trial"])
    storage_path = str(Path(sweep.results, "tune").resolve()) if "://" not in sweep.results else f"{sweep.results}/tune"
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(stage.trainable, data=data), resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=-1, reuse_actors=True, max_concurrent_trials=workers,
            scheduler=stage.scheduler() if stage.scheduler is not None else None,
        ),
        run_config=tune.RunConfig(
            name=f"{sweep.id}-{stage.name}",
            storage_path=storage_path,
            callbacks=[sink, JsonLoggerCallback()],  # per-trial result.json; no CSV/TensorBoard files
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # checkpointing trainables: only the latest is kept
        ),
    )
    try:
        tuner.fit()
    except Exception as exc:  # Tune may wrap what a callback raised
        if sink.fatal is None and not is_disk_full(exc):
            raise
        if sink.fatal is None:  # Tune's own state files found the disk full
            sink.fatal = disk_full_error(f"Ray Tune's state {storage_path}")
    finally:
        sink.flush()  # what finished before the end (or an interrupt) is recorded
    if sink.fatal is not None:
        raise sink.fatal
    return sink.ran


def _max_concurrent(sweep: Sweep) -> int:
    return max(1, int(_cluster_cpus() // max(1e-9, sweep.settings["cpus_per_trial"])))


def _cluster_cpus() -> float:
    import ray

    return ray.cluster_resources().get("CPU", os.cpu_count() or 1)
