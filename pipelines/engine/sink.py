"""The result sink: the driver-side Tune callback that records each finished configuration, and progress.

For every configuration a trial finishes, in this order: an MLflow child run
(params, metric history, final metrics), then its Parquet row and curve (the
record that it is done), then the stage's searcher is told (Optuna's
``tell``). A crash between any two writes is settled on restart: MLflow runs
without a row are dropped, Optuna trials left RUNNING are told from the rows.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from pipelines.engine.spec import GensweepError, Stage, disk_full_error, is_disk_full, trial_key
from pipelines.engine.store import ResultStore
from pipelines.engine.tracking import TrialLog
from tasks.report import FINAL, Report, units

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
    result.pop("models", None)
    names = ("config", "evaluated_params", "_Trial__unresolved_config")  # Ray Tune 2.60's attributes; absent ones skipped
    for holder in [getattr(trial, name, None) for name in names] + [result.get("config")]:
        if isinstance(holder, dict) and isinstance(holder.get("block"), list):
            holder["block"] = f"{len(holder['block'])} configurations (recorded)"
    if isinstance(getattr(trial, "experiment_tag", None), str):  # Tune's tag spells out every configuration
        trial.experiment_tag = result["experiment_tag"] = trial.experiment_tag[:100]
    getattr(trial, "invalidate_json_state", lambda: None)()  # the cached JSON states hold the block too
    getattr(getattr(trial, "run_metadata", None), "invalidate_cache", lambda: None)()


@dataclass
class Progress:
    """Counts finished configurations and prints one line at most every ``every_s`` seconds: rate and ETA."""

    name: str
    total: int
    done: int = 0
    failed: int = 0
    quiet: bool = False
    every_s: float = 2.0
    running_every_s: float = 60.0  # long trials: a line on the latest intermediate report at most this often
    start: float = field(default_factory=time.time)
    _base: int = 0
    _printed: float = 0.0
    best: tuple | None = None

    def __post_init__(self):
        self._base = self.done

    def add(self, n: int, text: str, metric: str, value, mode: str) -> None:
        self.done += n
        if value is not None and (self.best is None or (value > self.best[0] if mode == "max" else value < self.best[0])):
            self.best = (value, metric, text)
        self.show(text)

    def fail(self, text: str, retried: bool) -> None:
        self.failed += 0 if retried else 1
        self.show(text + (" (queued again)" if retried else ""), force=True)

    def running(self, describe: Callable[[], str]) -> None:
        """A line on a trial still running, ``describe()`` (built only then), when none was printed for ``running_every_s``."""
        now = time.time()
        if self.quiet or now - self._printed < self.running_every_s:
            return
        self._printed = now
        print(f"[{self.name}] {self.done}/{self.total} done | {now - self.start:.0f}s | running: {describe()}", flush=True)

    def show(self, text: str, force: bool = False) -> None:
        now = time.time()
        if self.quiet or (not force and now - self._printed < self.every_s and self.done < self.total):
            return
        self._printed = now
        elapsed = now - self.start
        rate = (self.done - self._base) / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_duration((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total else ""
        best = f" | best {self.best[1]}={_fmt(self.best[0])} ({self.best[2]})" if self.best else ""
        failed = f", {self.failed} failed" if self.failed else ""
        print(f"[{self.name}] {self.done}/{self.total} done{failed} | {rate:.2f}/s{eta} | {elapsed:.0f}s | {text}{best}", flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def make_sink(stage: Stage, pipeline: str, sweep: str, store: ResultStore, tracking, searcher, progress: Progress,
              flush_rows: int = FLUSH_ROWS, flush_s: float = FLUSH_S, optuna_url: str = "the Optuna storage"):
    """The Tune callback recording ``stage``'s finished configurations (see the module docstring); call ``flush()`` at the end.

    A write batch that finds its disk full (MLflow's database, the Parquet
    results or the Optuna storage) is not recorded: the sink keeps the one-line
    error in ``fatal`` and ends the Tune run at its next step; the batch's
    configurations have no Parquet row, so the next run trains them again.
    """
    from ray import tune

    class ResultSink(tune.Callback):
        def __init__(self):
            self.fatal: GensweepError | None = None
            self.curves: dict[str, dict[int, Report]] = {}
            self.ran = 0
            self.pending: list[tuple] = []  # (trial_id, logs, rows, finals, text, metric value), oldest first
            self.pending_rows = 0
            self.oldest = 0.0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            step = int(result.get("step", result["training_iteration"]))
            report = self.curves.setdefault(trial.trial_id, {})[step] = Report.from_tune(result)
            if report.models and not result.get(FINAL):
                def describe() -> str:  # the trial's label and metric, built only when a line is due
                    configs = units(dict(trial.config))
                    value = report.models[0].get(stage.metric)
                    shown = f"{stage.metric}={_fmt(value)}" if isinstance(value, (int, float)) else ""
                    block = f" (+{len(configs) - 1} in block)" if len(configs) > 1 else ""
                    return f"{stage.label(configs[0])}{block} at step {step}: {shown}".rstrip(": ")

                progress.running(describe)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            reports = [r for _, r in sorted(self.curves.pop(trial.trial_id, {}).items())]
            stopped = stage.scheduler is not None and not last.get(FINAL) and bool(last.get("done")) and reports
            if not (last.get(FINAL) or stopped):  # ended without its final report: run it again
                if not searcher.record(trial.trial_id, None):
                    progress.fail(f"{stage.label(units(trial.config)[0])}: ended without its final report", False)
                return
            configs = units(dict(trial.config))
            final = reports[-1]
            _release(trial)
            curves = list(zip(*[r.models for r in reports]))
            logs, rows = [], []
            for config, metrics, curve in zip(configs, final.models, curves):
                key, label = trial_key(config), stage.label(config)
                logs.append(TrialLog(key, label, config, list(curve), metrics))
                row = {**config, **metrics, "label": label, "config_json": json.dumps(config, sort_keys=True, default=str)}
                row.update(
                    wall_s=float(last.get("time_total_s", 0.0)), hostname=last.get("hostname"), node_ip=last.get("node_ip"),
                    node_id=final.node_id, stopped_early=bool(stopped),
                )
                rows.append((key, row, list(curve)))
            best = _best_index([m.get(stage.metric) for m in final.models], stage.mode)  # the block's best shows
            text = stage.label(configs[best]) + (f" (+{len(configs) - 1} in block)" if len(configs) > 1 else "")
            if not self.pending:
                self.oldest = time.time()
            self.pending.append((trial.trial_id, logs, rows, list(final.models), text, final.models[best].get(stage.metric)))
            self.pending_rows += len(rows)
            others = any(t is not trial and t.status in ("RUNNING", "PENDING") for t in trials)
            if self.pending_rows >= flush_rows or time.time() - self.oldest >= flush_s or not others:
                self.flush()

        def on_step_begin(self, iteration, trials, **info):
            if self.fatal is not None:
                raise self.fatal  # ends tuner.fit(); the runner re-raises it
            if self.pending and time.time() - self.oldest >= flush_s:
                self.flush()

        def flush(self) -> None:
            """Write the waiting configurations: MLflow (one batch), Parquet, then the searcher's tells."""
            if not self.pending or self.fatal is not None:
                return
            batch, self.pending, self.pending_rows = self.pending, [], 0
            where = tracking.uri
            try:
                tracking.log_trials([log for _, logs, _, _, _, _ in batch for log in logs])
                where = f"the results {store.root}"
                store.write_trials(pipeline, sweep, [item for _, _, rows, _, _, _ in batch for item in rows])
                where = optuna_url
                for trial_id, _, rows, finals, text, value in batch:
                    searcher.record(trial_id, finals)
                    self.ran += len(rows)
                    progress.add(len(rows), f"{text}: {stage.metric}={_fmt(value)}", stage.metric, value, stage.mode)
            except Exception as exc:  # sqlite3, SQLAlchemy, MLflow and pyarrow each raise their own
                if not is_disk_full(exc):
                    raise
                self.fatal = disk_full_error(where)
            del batch
            _trim_heap()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.curves.pop(trial.trial_id, None)
            retried = searcher.record(trial.trial_id, None)
            progress.fail(f"{stage.label(units(trial.config)[0])}: FAILED (see {trial.local_path})", retried)

    return ResultSink()
