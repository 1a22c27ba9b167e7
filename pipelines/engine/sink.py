"""The result sink: the driver-side Tune callback that records each finished configuration.

For every configuration a trial finishes, in this order: an MLflow child run
(params, metric history, final metrics), then its Parquet row and curve (the
record that it is done), then the stage's searcher is told (Optuna's
``tell``). A crash between any two writes is settled on restart: MLflow runs
without a row are dropped, Optuna trials left RUNNING are told from the rows.

This module imports Ray Tune: the runner imports it only when a stage runs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ray import tune

from pipelines.engine.progress import Progress, format_value
from pipelines.engine.searchers import StageSearcher
from pipelines.engine.spec import GensweepError, Stage, disk_full_error, is_disk_full, trial_key
from pipelines.engine.store import ConfigurationResult, ResultStore
from pipelines.engine.tracking import TrialLog
from tasks.report import FINAL, REPORTED_AT, Report, configurations

FLUSH_ROWS = 256  # configurations per write batch
FLUSH_S = 5.0  # the longest a finished configuration waits for its batch


def _trim_heap() -> None:
    """Hand the freed heap back to the OS after a batch (glibc ``malloc_trim``; a no-op elsewhere).

    A write batch builds and drops thousands of rows; without this the
    driver's resident memory keeps the high-water mark of every batch.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _best_index(values: list, mode: str) -> int:
    """Index of the best value ("min" or "max"), NaN and None skipped; the last index when none is a number."""
    numbers = [(v, i) for i, v in enumerate(values) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    if not numbers:
        return len(values) - 1
    return (max if mode == "max" else min)(numbers, key=lambda pair: pair[0])[1]


def _release(trial) -> None:
    """Drop a finished block's configurations and metrics from Tune's Trial (the sink has them now).

    Tune keeps every Trial, with its config (several copies) and last result,
    for the whole experiment: a block of K configurations would keep K config
    dicts and K metric dicts per trial, and the driver's memory would grow with
    every finished configuration. What stays is the block's size.
    """
    result = trial.last_result if isinstance(trial.last_result, dict) else {}
    result.pop("metrics", None)
    names = ("config", "evaluated_params", "_Trial__unresolved_config")  # Ray Tune 2.60's attributes; absent ones skipped
    for holder in [getattr(trial, name, None) for name in names] + [result.get("config")]:
        if isinstance(holder, dict) and isinstance(holder.get("block"), list):
            holder["block"] = f"{len(holder['block'])} configurations (recorded)"
    if isinstance(getattr(trial, "experiment_tag", None), str):  # Tune's tag spells out every configuration
        trial.experiment_tag = result["experiment_tag"] = trial.experiment_tag[:100]
    getattr(trial, "invalidate_json_state", lambda: None)()  # the cached JSON states hold the block too
    getattr(getattr(trial, "run_metadata", None), "invalidate_cache", lambda: None)()


@dataclass
class FinishedTrial:
    """A finished trial waiting for the next write batch: its configurations for MLflow and Parquet, and for the progress line."""

    trial_id: str
    logs: list[TrialLog]
    results: list[ConfigurationResult]
    finals: list[dict]  # each configuration's final metrics, for the searcher
    text: str  # the block's best configuration, labelled
    value: float | None  # its metric


class ResultSink(tune.Callback):
    """The Tune callback recording ``stage``'s finished configurations (see the module docstring); call ``flush()`` at the end.

    A write batch that finds its disk full (MLflow's database, the Parquet
    results or the Optuna storage) is not recorded: the sink keeps the one-line
    error in ``fatal`` and ends the Tune run at its next step; the batch's
    configurations have no Parquet row, so the next run trains them again.
    """

    def __init__(self, stage: Stage, pipeline: str, sweep: str, store: ResultStore, tracking, searcher: StageSearcher,
                 progress: Progress, flush_rows: int = FLUSH_ROWS, flush_s: float = FLUSH_S, optuna_url: str = "the Optuna storage"):
        self.stage, self.pipeline, self.sweep, self.store, self.tracking = stage, pipeline, sweep, store, tracking
        self.searcher, self.progress, self.flush_rows, self.flush_s, self.optuna_url = searcher, progress, flush_rows, flush_s, optuna_url
        self.fatal: GensweepError | None = None
        self.curves: dict[str, dict[int, Report]] = {}
        self.ran = 0
        self.pending: list[FinishedTrial] = []  # oldest first
        self.pending_rows = 0
        self.oldest = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("step", result["training_iteration"]))
        report = self.curves.setdefault(trial.trial_id, {})[step] = Report.from_tune(result)
        if report.metrics and not result.get(FINAL):  # every running trial's latest report, built only when a line is due
            running = [t for t in trials if t.trial_id in self.curves and (t is trial or t.status == "RUNNING")]
            self.progress.running(lambda: "; ".join(filter(None, map(self._describe, running))))

    def _describe(self, trial) -> str:
        """A running trial's label, block size, latest step and metric ('' before its first metrics)."""
        step = max(self.curves[trial.trial_id])
        report = self.curves[trial.trial_id][step]
        if not report.metrics:
            return ""
        trained = configurations(dict(trial.config))
        value = report.metrics[0].get(self.stage.metric)
        shown = f"{self.stage.metric}={format_value(value)}" if isinstance(value, (int, float)) else ""
        block = f" (+{len(trained) - 1} in block)" if len(trained) > 1 else ""
        return f"{self.stage.label(trained[0])}{block} at step {step}: {shown}".rstrip(": ")

    def on_trial_complete(self, iteration, trials, trial, **info):
        stage = self.stage
        last = trial.last_result or {}
        reports = [r for _, r in sorted(self.curves.pop(trial.trial_id, {}).items())]
        stopped = stage.scheduler is not None and not last.get(FINAL) and bool(last.get("done")) and reports
        if not (last.get(FINAL) or stopped):  # ended without its final report: run it again
            if not self.searcher.record(trial.trial_id, None):
                self.progress.fail(f"{stage.label(configurations(trial.config)[0])}: ended without its final report", False)
            return
        trained = configurations(dict(trial.config))
        final = reports[-1]
        _release(trial)
        reported = last.get(REPORTED_AT)  # when the trial's node sent its last report (not when this batch is written)
        finished_at = datetime.fromtimestamp(reported, timezone.utc) if isinstance(reported, (int, float)) else datetime.now(timezone.utc)
        wall_s = float(last.get("time_total_s", 0.0))  # the trial's training time: its runs start that long before finished_at
        curves = list(zip(*[r.metrics for r in reports]))
        logs, results = [], []
        for configuration, metrics, curve in zip(trained, final.metrics, curves):
            key, label = trial_key(configuration), stage.label(configuration)
            logs.append(TrialLog(key, label, configuration, list(curve), metrics, finished_at=finished_at, wall_s=wall_s))
            row = {**configuration, **metrics, "label": label, "config_json": json.dumps(configuration, sort_keys=True, default=str)}
            row.update(
                wall_s=wall_s, hostname=last.get("hostname"), node_ip=last.get("node_ip"),
                node_id=final.node_id, stopped_early=bool(stopped), finished_at=finished_at,
            )
            results.append(ConfigurationResult(key, row, list(curve)))
        best = _best_index([m.get(stage.metric) for m in final.metrics], stage.mode)  # the block's best shows
        text = stage.label(trained[best]) + (f" (+{len(trained) - 1} in block)" if len(trained) > 1 else "")
        if not self.pending:
            self.oldest = time.time()
        self.pending.append(FinishedTrial(trial.trial_id, logs, results, list(final.metrics), text, final.metrics[best].get(stage.metric)))
        self.pending_rows += len(results)
        others = any(t is not trial and t.status in ("RUNNING", "PENDING") for t in trials)
        if self.pending_rows >= self.flush_rows or time.time() - self.oldest >= self.flush_s or not others:
            self.flush()

    def on_step_begin(self, iteration, trials, **info):
        if self.fatal is not None:
            raise self.fatal  # ends tuner.fit(); the runner re-raises it
        if self.pending and time.time() - self.oldest >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the waiting configurations: MLflow (one batch), Parquet, then the searcher's tells."""
        if not self.pending or self.fatal is not None:
            return
        batch, self.pending, self.pending_rows = self.pending, [], 0
        stage, where = self.stage, self.tracking.uri
        try:
            self.tracking.log_trials([log for finished in batch for log in finished.logs])
            where = f"the results {self.store.root}"
            self.store.write_trials(self.pipeline, self.sweep, [result for finished in batch for result in finished.results])
            where = self.optuna_url
            for finished in batch:
                self.searcher.record(finished.trial_id, finished.finals)
                self.ran += len(finished.results)
                self.progress.add(len(finished.results), f"{finished.text}: {stage.metric}={format_value(finished.value)}",
                                  stage.metric, finished.value, stage.mode)
        except Exception as exc:  # sqlite3, SQLAlchemy, MLflow and pyarrow each raise their own
            if not is_disk_full(exc):
                raise
            self.fatal = disk_full_error(where)
        del batch
        _trim_heap()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.curves.pop(trial.trial_id, None)
        retried = self.searcher.record(trial.trial_id, None)
        self.progress.fail(f"{self.stage.label(configurations(trial.config)[0])}: FAILED (see {trial.local_path})", retried)
