"""Run a pipeline's sweep on Ray Tune: skip finished trials, sink results, show progress.

Data flow: the driver loads the image source once (so bad data fails before
Ray starts), puts it in the object store, and launches the trials that have no
result row yet. A driver-side callback writes each finished trial to MLflow,
then to Parquet (the Parquet file is the record that a trial is done), and
prints progress. Grid pipelines run their explicit configs; search pipelines
run an Optuna study in the results' RDB storage through ``OptunaSearch``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.data import ImageSource, load_source
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
    id: str = field(init=False, default="")


def _metrics(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TUNE_KEYS and not isinstance(v, dict)}


def make_sink_callback(sweep: Sweep, store: ResultStore, tracking: MlflowSweep, total: int, already: int):
    """The driver-side Tune callback: MLflow child run + Parquet row per finished trial, and progress lines."""
    from ray import tune

    pipeline = sweep.pipeline

    class ResultSink(tune.Callback):
        def __init__(self):
            self.curves: dict[str, dict[int, dict]] = {}
            self.done, self.failed, self.start = already, 0, time.time()
            self.best: tuple[float, str] | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = _metrics(result)
            self.curves.setdefault(trial.trial_id, {})[int(row.get("step", result["training_iteration"]))] = row

        def on_trial_complete(self, iteration, trials, trial, **info):
            config, final = dict(trial.config), _metrics(trial.last_result or {})
            curve = [row for _, row in sorted(self.curves.pop(trial.trial_id, {}).items())]
            if not final:
                return
            key, label = trial_key(config), pipeline.label(config)
            tracking.log_trial(key, label, config, curve, final)
            row = {**config, **final, "label": label, "config_json": _json(config)}
            row["wall_s"] = float((trial.last_result or {}).get("time_total_s", 0.0))
            store.write_trial(pipeline.name, sweep.id, key, row, curve)
            self.done += 1
            value = final.get(pipeline.metric)
            if value is not None:
                better = self.best is None or (value > self.best[0] if pipeline.mode == "max" else value < self.best[0])
                if better:
                    self.best = (value, label)
            self._print(f"{label}: {pipeline.metric}={_fmt(value)}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.curves.pop(trial.trial_id, None)
            self.failed += 1
            self._print(f"{pipeline.label(trial.config)}: FAILED (see {trial.local_path})")

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


def prepare_study(storage, study_name: str, direction: str) -> int:
    """Create or load the study, mark trials a crash left RUNNING as FAIL; return its trial count."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False))


def run_sweep(sweep: Sweep) -> dict:
    """Run (or resume) a sweep to completion; return a summary dict (sweep id, counts, paths)."""
    pipeline = sweep.pipeline
    store = ResultStore.open(sweep.results)
    store.check_writable()
    source: ImageSource | None = load_source(sweep.data_dir) if pipeline.needs_source else None
    fingerprint = source.fingerprint if source is not None else "none"
    sweep.id = sweep_id(pipeline.name, sweep.preset, sweep.settings, fingerprint)
    tracking = MlflowSweep(
        sweep.mlflow_uri or default_tracking_uri(sweep.results), pipeline.name, sweep.id, {"preset": sweep.preset, **sweep.settings}
    )
    done = store.finished_keys(pipeline.name, sweep.id)
    init_ray(sweep.address, sweep.num_cpus)

    from ray import tune

    tune_config: dict = {"reuse_actors": True}
    if pipeline.trials is not None:
        configs = [{**c, "source": fingerprint} for c in pipeline.trials(sweep.settings)]
        todo = [c for c in configs if trial_key(c) not in done]
        total, param_space = len(configs), {}
        tune_config.update(search_alg=explicit_configs(todo), num_samples=len(todo))
    else:
        from ray.tune.search.optuna import OptunaSearch
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        search = pipeline.search(sweep.settings)
        storage = _optuna_storage(sweep)
        study_name = f"{pipeline.name}/{sweep.id}"
        n_trials = prepare_study(storage, study_name, "maximize" if search.mode == "max" else "minimize")
        seed = search.seed + n_trials  # a resumed study must not redraw the configurations it already tried
        sampler = optuna.samplers.TPESampler(seed=seed) if search.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
        total, param_space = search.num_samples, {**search.fixed, "source": fingerprint}
        todo = list(range(max(0, total - len(done))))
        searcher = finished_only(OptunaSearch)(
            space=search.space, metric=search.metric, mode=search.mode, sampler=sampler, study_name=study_name, storage=storage
        )
        tune_config.update(
            search_alg=searcher, num_samples=len(todo), max_concurrent_trials=max(1, int(_cluster_cpus()))
        )

    summary = {"pipeline": pipeline.name, "sweep": sweep.id, "total": total, "skipped": total - len(todo), "results": sweep.results}
    if not sweep.quiet:
        print(f"[{pipeline.name}] sweep {sweep.id}: {len(todo)} of {total} trials to run ({total - len(todo)} already done)", flush=True)
    if not todo:
        tracking.finish("FINISHED")
        return {**summary, "ran": 0, "failed": 0}

    resources = trial_resources(sweep.settings.get("cpus_per_trial", 1), sweep.settings.get("gpus_per_trial", 0.0))
    trainable = tune.with_resources(tune.with_parameters(pipeline.trainable, source=source), resources)
    sink = make_sink_callback(sweep, store, tracking, total, total - len(todo))
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(
            name=sweep.id,
            storage_path=str(Path(sweep.results, "tune").resolve()) if "://" not in sweep.results else f"{sweep.results}/tune",
            callbacks=[sink],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=int(sweep.settings.get("max_failures", 2))),
        ),
    )
    tuner.fit()
    finished = len(store.finished_keys(pipeline.name, sweep.id))
    complete = finished >= total
    tracking.finish("FINISHED" if complete else "KILLED")
    return {**summary, "ran": sink.done - (total - len(todo)), "failed": sink.failed, "finished": finished, "complete": complete}


def _cluster_cpus() -> float:
    import ray

    return ray.cluster_resources().get("CPU", os.cpu_count() or 1)
