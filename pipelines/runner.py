"""Run a pipeline's sweep on Ray Tune: skip finished configurations, sink results, show progress.

Data flow: the driver loads the image source once (so bad data fails before
Ray starts), puts it in the object store, and launches only the configurations
that have no result row yet. A driver-side callback writes each finished
configuration to MLflow, then to Parquet (the Parquet file is the record that
it is done), and prints progress. A sweep runs up to two phases, each one
Tuner: the pipeline's grid (explicit configs, possibly blocks of several
configurations per trial), then its search: one Optuna study through
``OptunaSearch``, or many studies searched in blocks (``pipelines.block_search``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.data import ImageSource, load_source
from pipelines.block_search import block_searcher, make_sampler, prepare_study, study_names
from pipelines.runtime import init_ray, trial_resources
from pipelines.spec import GensweepError, Pipeline, sweep_id, trial_key
from pipelines.store import ResultStore
from pipelines.tracking import MlflowSweep, default_tracking_uri

TUNE_KEYS = {
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s",
    "pid", "time_since_restore", "iterations_since_restore", "experiment_tag", "config", "checkpoint_dir_name",
    "should_checkpoint",
}


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
    id: str = field(init=False, default="")


def _metrics(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TUNE_KEYS and not isinstance(v, dict)}


def units(config: dict) -> list[dict]:
    """The configurations a trial trains: the config itself, or each block entry merged over the shared keys."""
    if "block" not in config:
        return [config]
    shared = {k: v for k, v in config.items() if k != "block"}
    return [{**shared, **entry} for entry in config["block"]]


def unit_rows(result: dict, n: int) -> list[dict]:
    """Per-configuration metrics of one reported result (blocks report ``models``)."""
    if "models" in result:
        step = result.get("step")
        return [{"step": step, **row} for row in result["models"]]
    return [_metrics(result)] * n


def make_sink_callback(sweep: Sweep, store: ResultStore, tracking: MlflowSweep, total: int, already: int):
    """The driver-side Tune callback: per finished configuration an MLflow child run and a Parquet row; progress."""
    from ray import tune

    pipeline = sweep.pipeline

    class ResultSink(tune.Callback):
        def __init__(self):
            self.curves: dict[str, dict[int, dict]] = {}
            self.done, self.failed, self.start = already, 0, time.time()
            self.best: tuple[float, str] | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info):
            step = int(result.get("step", result["training_iteration"]))
            self.curves.setdefault(trial.trial_id, {})[step] = result

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            results = [result for _, result in sorted(self.curves.pop(trial.trial_id, {}).items())]
            if not last.get("done"):
                return
            configs = units(dict(trial.config))
            curves = list(zip(*[unit_rows(r, len(configs)) for r in results])) or [[] for _ in configs]
            finals = unit_rows(last, len(configs))
            for config, final, curve in zip(configs, finals, curves):
                key, label = trial_key(config), pipeline.label(config)
                tracking.log_trial(key, label, config, list(curve), final)
                row = {**{k: v for k, v in config.items()}, **final, "label": label, "config_json": _json(config)}
                row.update(wall_s=float(last.get("time_total_s", 0.0)), hostname=last.get("hostname"), node_ip=last.get("node_ip"))
                if "node_id" in last:  # block units' rows come from ``models``: copy the node like the host
                    row["node_id"] = last["node_id"]
                store.write_trial(pipeline.name, sweep.id, key, row, list(curve))
                self.done += 1
                self._track_best(final.get(pipeline.metric), label)
            self._print(f"{pipeline.label(configs[-1])}" + (f" (+{len(configs) - 1} in block)" if len(configs) > 1 else "")
                        + f": {pipeline.metric}={_fmt(finals[-1].get(pipeline.metric))}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.curves.pop(trial.trial_id, None)
            self.failed += 1
            self._print(f"{pipeline.label(units(trial.config)[0])}: FAILED (see {trial.local_path})")

        def _track_best(self, value, label: str) -> None:
            if value is None:
                return
            if self.best is None or (value > self.best[0] if pipeline.mode == "max" else value < self.best[0]):
                self.best = (value, label)

        def _print(self, last: str) -> None:
            if sweep.quiet:
                return
            best = f" | best {pipeline.metric}={_fmt(self.best[0])} ({self.best[1]})" if self.best else ""
            failed = f", {self.failed} failed" if self.failed else ""
            elapsed = time.time() - self.start
            print(f"[{pipeline.name}] {self.done}/{total} done{failed} | {last}{best} | {elapsed:.0f}s", flush=True)

    return ResultSink()


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _json(config: dict) -> str:
    import json

    return json.dumps(config, sort_keys=True, default=str)


def explicit_configs(configs: list[dict]):
    """A Tune searcher that hands out exactly ``configs``, in order, then reports FINISHED."""
    from ray.tune.search import Searcher

    class ExplicitConfigs(Searcher):
        def __init__(self):
            super().__init__()
            self.pending = list(configs)

        def suggest(self, trial_id: str):
            return dict(self.pending.pop(0)) if self.pending else Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
            pass

        def save(self, checkpoint_path: str):
            pass  # nothing to save: a resumed sweep recomputes what is left from the Parquet results

        def restore(self, checkpoint_path: str):
            pass

    return ExplicitConfigs()


def finished_only(searcher_class):
    """``searcher_class`` telling Optuna only trials that reached their final report.

    A trial that ends without ``done`` (interrupted sweep, dead worker) is told
    FAIL, so the study holds exactly one COMPLETE trial per Parquet row and a
    resumed sweep samples a replacement. (No scheduler stops trials early here.)
    """

    class FinishedOnly(searcher_class):
        def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
            if error or not (result or {}).get("done", False):
                return super().on_trial_complete(trial_id, None, True)
            return super().on_trial_complete(trial_id, result, False)

    FinishedOnly.__name__ = f"FinishedOnly{searcher_class.__name__}"
    return FinishedOnly


def _optuna_storage(sweep: Sweep):
    import optuna

    url = sweep.optuna_storage or f"sqlite:///{Path(sweep.results).resolve() / 'optuna.db'}"
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises driver-specific errors
        raise GensweepError(f"cannot open Optuna storage {url}: {str(exc).splitlines()[0]}") from None


@dataclass
class Phase:
    """One Tuner run of a sweep: a trainable, its searcher, how many configurations it still owes."""

    name: str
    trainable: object
    search_alg: object
    num_samples: int
    todo: int
    param_space: dict = field(default_factory=dict)
    max_concurrent: int = 0
    keys: set[str] = field(default_factory=set)  # grid phases: every configuration's key, to check completion


def _grid_phase(pipeline: Pipeline, settings: dict, fingerprint: str, done: set[str]) -> tuple[Phase, int]:
    configs = [{**c, "source": fingerprint} for c in pipeline.trials(settings)]
    todo = []
    for config in configs:  # drop finished configurations; blocks keep their unfinished entries
        if "block" in config:
            left = [entry for entry, unit in zip(config["block"], units(config)) if trial_key(unit) not in done]
            if left:
                todo.append({**config, "block": left})
        elif trial_key(config) not in done:
            todo.append(config)
    keys = {trial_key(unit) for config in configs for unit in units(config)}
    phase = Phase("grid", pipeline.trainable, explicit_configs(todo), len(todo), sum(len(units(c)) for c in todo), keys=keys)
    return phase, len(keys)


def _search_phase(pipeline: Pipeline, sweep: Sweep, fingerprint: str, store: ResultStore, done: set[str]) -> tuple[Phase, int]:
    from ray.tune.search.optuna import OptunaSearch

    search = pipeline.search(sweep.settings)
    storage = _optuna_storage(sweep)
    study_name = f"{pipeline.name}/{sweep.id}"
    rows = store.read("trials", pipeline.name, sweep.id).to_dict("records")
    n_trials = prepare_study(storage, study_name, "maximize" if search.mode == "max" else "minimize", rows, search.metric)
    sampler = make_sampler(search.sampler, search.seed + n_trials)  # a resumed study must not redraw old configurations
    todo = max(0, search.num_samples - len(done))
    searcher = finished_only(OptunaSearch)(
        space=search.space, metric=search.metric, mode=search.mode, sampler=sampler, study_name=study_name, storage=storage
    )
    phase = Phase("search", pipeline.trainable, searcher, todo, todo, {**search.fixed, "source": fingerprint}, _max_concurrent(sweep))
    return phase, search.num_samples


def _block_search_phase(pipeline: Pipeline, sweep: Sweep, fingerprint: str, store: ResultStore) -> tuple[Phase, int]:
    search = pipeline.block_search(sweep.settings)
    prefix = f"{pipeline.name}/{sweep.id}/"
    names = study_names(search, prefix)
    rows = store.read("trials", pipeline.name, sweep.id)
    finished = {name: group.to_dict("records") for name, group in rows.groupby("study")} if "study" in rows else {}
    remaining = {name: max(0, search.budget - len(finished.get(name, []))) for name in names}
    workers = _max_concurrent(sweep)
    searcher = block_searcher(search, _optuna_storage(sweep), remaining, {"source": fingerprint}, prefix, finished, workers)
    todo = sum(remaining.values())
    trainable = pipeline.block_trainable or pipeline.trainable
    return Phase("search", trainable, searcher, -1 if todo else 0, todo, {}, workers), search.budget * len(names)


def run_sweep(sweep: Sweep) -> dict:
    """Run (or resume) a sweep to completion; return a summary dict (sweep id, counts, paths).

    A pipeline's grid (``trials``) runs first, then its search (``search`` or
    ``block_search``), each as one Tuner; configurations with a Parquet row are skipped.
    """
    pipeline = sweep.pipeline
    store = ResultStore.open(sweep.results)
    store.check_writable()
    source: ImageSource | None = load_source(sweep.data_dir) if pipeline.needs_source else None
    fingerprint = source.fingerprint if source is not None else "none"
    sweep.id = sweep_id(pipeline.name, sweep.preset, sweep.settings, fingerprint)
    if sweep.expect_id and sweep.id != sweep.expect_id:
        raise GensweepError(
            f"the recorded command of sweep {sweep.expect_id} now gives sweep {sweep.id} "
            "(preset or data changed since); run it with `gensweep run` to start that sweep"
        )
    tracking = MlflowSweep(
        sweep.mlflow_uri or default_tracking_uri(sweep.results), pipeline.name, sweep.id, {"preset": sweep.preset, **sweep.settings}
    )
    done = store.finished_keys(pipeline.name, sweep.id)
    tracking.drop_unrecorded(done)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    init_ray(sweep.address, sweep.num_cpus)
    save_sweep_args(store, sweep)  # once storage, tracking and Ray all answer: `gensweep resume` re-runs this

    phases, total = [], 0
    if pipeline.trials is not None:
        phase, n = _grid_phase(pipeline, sweep.settings, fingerprint, done)
        phases.append(phase)
        total += n
    if pipeline.search is not None:
        phase, n = _search_phase(pipeline, sweep, fingerprint, store, done)
        phases.append(phase)
        total += n
    if pipeline.block_search is not None:
        phase, n = _block_search_phase(pipeline, sweep, fingerprint, store)
        phases.append(phase)
        total += n
    todo = sum(p.todo for p in phases)

    summary = {"pipeline": pipeline.name, "sweep": sweep.id, "total": total, "skipped": total - todo, "results": sweep.results}
    if not sweep.quiet:
        print(f"[{pipeline.name}] sweep {sweep.id}: {todo} of {total} configurations to run ({total - todo} already done)", flush=True)
    if not todo:
        tracking.finish("FINISHED")
        return {**summary, "ran": 0, "failed": 0, "finished": total, "complete": True}

    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    resources = trial_resources(sweep.settings.get("cpus_per_trial", 1), sweep.settings.get("gpus_per_trial", 0.0))
    sink = make_sink_callback(sweep, store, tracking, total, total - todo)
    storage_path = str(Path(sweep.results, "tune").resolve()) if "://" not in sweep.results else f"{sweep.results}/tune"
    for phase in phases:
        if phase.todo == 0:
            continue
        trainable = tune.with_resources(tune.with_parameters(phase.trainable, source=source), resources)
        tuner = tune.Tuner(
            trainable,
            param_space=phase.param_space,
            tune_config=tune.TuneConfig(
                search_alg=phase.search_alg, num_samples=phase.num_samples, reuse_actors=True,
                max_concurrent_trials=phase.max_concurrent or None,
            ),
            run_config=tune.RunConfig(
                name=f"{sweep.id}-{phase.name}",
                storage_path=storage_path,
                callbacks=[sink, JsonLoggerCallback()],  # per-trial result.json; no CSV/TensorBoard files
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=int(sweep.settings.get("max_failures", 2))),
            ),
        )
        tuner.fit()
        if not phase.keys <= store.finished_keys(pipeline.name, sweep.id):
            break  # interrupted or failed: later phases wait for the next run
    finished = len(store.finished_keys(pipeline.name, sweep.id))
    complete = finished >= total
    tracking.finish("FINISHED" if complete else "KILLED")
    return {**summary, "ran": sink.done - (total - todo), "failed": sink.failed, "finished": finished, "complete": complete}


SWEEPS_DIR = "sweeps"  # RESULTS/sweeps/<sweep id>.json: the arguments of each sweep, for `gensweep resume`


def _without_password(url: str | None) -> str | None:
    """``url`` with any password taken out (``scheme://user:pw@host`` -> ``scheme://user@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))


def save_sweep_args(store: ResultStore, sweep: Sweep) -> None:
    """Record the sweep's command arguments (written on every start, so the newest start is last).

    Passwords in URLs are left out: results hold no credentials (give them
    through ~/.pgpass or the environment, as docs/cluster.md shows).
    """
    import json
    import uuid
    from datetime import datetime, timezone

    local = lambda path: path if path is None or "://" in path else os.path.abspath(path)  # noqa: E731
    args = {
        "sweep": sweep.id, "pipeline": sweep.pipeline.name, "preset": sweep.preset, "overrides": list(sweep.overrides),
        "data_dir": local(sweep.data_dir), "address": _without_password(sweep.address),
        "mlflow_uri": _without_password(sweep.mlflow_uri), "optuna_storage": _without_password(sweep.optuna_storage),
        "num_cpus": sweep.num_cpus,
        "started_at": datetime.now(timezone.utc).isoformat(),
    }
    path = f"{store.root}/{SWEEPS_DIR}/{sweep.id}.json"
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    store.fs.create_dir(f"{store.root}/{SWEEPS_DIR}", recursive=True)
    with store.fs.open_output_stream(tmp) as out:
        out.write(json.dumps(args, indent=1).encode())
    store.fs.move(tmp, path)


def load_sweep_args(results: str, sweep: str | None = None) -> dict:
    """The recorded arguments of sweep ``sweep``, or of the most recently started sweep in ``results``."""
    import json

    import pyarrow.fs as pafs

    store = ResultStore.open(results)
    selector = pafs.FileSelector(f"{store.root}/{SWEEPS_DIR}", allow_not_found=True)
    found = {}
    for info in store.fs.get_file_info(selector):
        if info.path.endswith(".json"):
            try:
                with store.fs.open_input_stream(info.path) as stream:
                    args = json.loads(stream.read())
                found[args["sweep"]] = args
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise GensweepError(f"cannot read sweep record {info.path}: {exc}") from None
    if not found:
        raise GensweepError(f"no recorded sweeps in {results} (start one with: gensweep run PIPELINE --results {results})")
    if sweep is None:
        return max(found.values(), key=lambda args: args["started_at"])
    if sweep not in found:
        raise GensweepError(f"no recorded sweep {sweep!r} in {results} (have: {', '.join(sorted(found))})")
    return found[sweep]


def _max_concurrent(sweep: Sweep) -> int:
    return max(1, int(_cluster_cpus() // max(1e-9, sweep.settings.get("cpus_per_trial", 1))))


def _cluster_cpus() -> float:
    import ray

    return ray.cluster_resources().get("CPU", os.cpu_count() or 1)
