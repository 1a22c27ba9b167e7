"""MLflow tracking, written by the driver only: one parent run per sweep, one child run per trial.

The experiment is ``gensweep/<pipeline>``. Runs carry the tags
``gensweep.sweep_id`` and (children) ``gensweep.trial_key``, so a resumed
sweep reopens its parent run and never logs a finished trial twice.

Child runs are written in batches (:meth:`MlflowSweep.log_trials`): on a
SQL store (SQLite, PostgreSQL, MySQL: MLflow's ``SqlAlchemyStore``) a batch
of finished runs with their params, tags and metric histories is one
transaction of multi-row inserts into MLflow's own tables (its SQLAlchemy
models), the rows MLflow's
``create_run`` + ``log_batch`` + ``set_terminated`` would write (checked
against them in ``tests/test_tracking_batch.py``); on a tracking server each
run takes its three REST calls. A child run's start and end are its
configuration's (the row's ``finished_at`` minus ``wall_s``, and
``finished_at``), so MLflow shows how long it trained.

Artifacts (each sweep's report and figures, logged on its parent run by
:func:`log_report`) live beside a SQLite store, ``RESULTS/mlartifacts/<pipeline>``:
the experiment is created with that artifact location. Experiments created
before keep the location they were created with.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from itertools import zip_longest
from pathlib import Path
from urllib.parse import urlparse

from pipelines.engine.codeversion import version_text
from pipelines.engine.dblock import sqlite_lock, sqlite_path
from pipelines.engine.runtime import check_reachable
from pipelines.engine.spec import GensweepError, disk_full_error, is_disk_full

# MLflow 3 opens an experiment without this tag on its GenAI overview (traces, judges); tagged as model training,
# the UI opens on the runs table.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAMS = 100  # MLflow's log_batch limits: 100 params, 1000 entities in all
MAX_METRICS = 900
ARTIFACTS = "mlartifacts"  # beside a SQLite store: RESULTS/mlartifacts/<pipeline>/<run id>/artifacts
UI_QUERY = "?workflowType=machine_learning"  # MLflow 3's UI opens an experiment on its runs, not its GenAI overview


def default_tracking_uri(results: str) -> str:
    """The SQLite store inside a local results directory."""
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a SQLite tracking URI (None for other stores)."""
    path = sqlite_path(tracking_uri)
    return Path(path) if path else None


def artifact_location(tracking_uri: str, pipeline: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store (RESULTS/mlartifacts/<pipeline>); None: the server's default."""
    db = _sqlite_file(tracking_uri)
    return str(db.parent / ARTIFACTS / pipeline) if db is not None else None


def ui_urls(db: Path, host: str, port: int) -> list[tuple[str, str]]:
    """(experiment name, URL opening it on its runs table) of each gensweep experiment in the SQLite store ``db``.

    Read with sqlite3 (MLflow's ``experiments`` table), so ``gensweep ui`` prints
    them before MLflow starts; the experiments list when there is none yet.
    """
    import sqlite3

    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/#/experiments"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT experiment_id, name FROM experiments WHERE name LIKE 'gensweep/%' AND lifecycle_stage = 'active' "
                "ORDER BY name").fetchall()
    except sqlite3.Error:  # no experiments table yet
        rows = []
    return [(name, f"{base}/{experiment_id}{UI_QUERY}") for experiment_id, name in rows] or [("experiments", base + UI_QUERY)]


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one clear line when an http(s) tracking server does not answer (other URIs: nothing to probe)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        check_reachable(parsed.hostname, port, f"MLflow tracking server {tracking_uri}", timeout)


@dataclass
class TrialLog:
    """One finished configuration for MLflow: its key, display label, config (params), curve and final metrics."""

    key: str
    label: str
    config: dict
    curve: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    finished_at: datetime | None = None  # when its final report was sent (the row's finished_at); None: now
    wall_s: float = 0.0  # how long it trained (the row's wall_s): the run starts that long before it finished

    def times(self) -> tuple[int, int]:
        """(start_time, end_time) of its MLflow run, in milliseconds since the epoch."""
        end = int(round(self.finished_at.timestamp() * 1000)) if self.finished_at else int(time.time() * 1000)
        return end - int(round(max(self.wall_s, 0.0) * 1000)), end


def _numeric(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _metrics_of(log: TrialLog) -> list[tuple[str, float, int]]:
    """(name, value, step): the curve's history by step, then ``final_<name>`` at the last step."""
    history = [(name, value, row.get("step", i)) for i, row in enumerate(log.curve) for name, value in _numeric(row).items() if name != "step"]
    last_step = int(log.final.get("step", len(log.curve)))
    return history + [(f"final_{name}", value, last_step) for name, value in _numeric(log.final).items() if name != "step"]


class MlflowSweep:
    """A sweep's parent run and the writer of its child runs."""

    def __init__(self, tracking_uri: str, pipeline: str, sweep: str, settings: dict, tags: dict | None = None):
        from mlflow.tracking import MlflowClient

        check_server(tracking_uri)
        self.uri = tracking_uri
        self.pipeline, self.sweep = pipeline, sweep
        with sqlite_lock(tracking_uri, "MLflow database"):  # sweeps started together: one creates and migrates it
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self._open(settings, tags)
        self.logged: set[str] = set(self._children())  # keys with a child run: each key is logged once

    def _open(self, settings: dict, tags: dict | None) -> None:
        """The experiment (created if new) and the sweep's parent run (reopened, or created with its settings)."""
        pipeline, sweep, tracking_uri = self.pipeline, self.sweep, self.uri
        try:
            name = f"gensweep/{pipeline}"
            experiment = self.client.get_experiment_by_name(name)
            self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                name, artifact_location=artifact_location(tracking_uri, pipeline), tags=EXPERIMENT_TAGS)
            if experiment and any(experiment.tags.get(k) != v for k, v in EXPERIMENT_TAGS.items()):
                for key, value in EXPERIMENT_TAGS.items():  # made by an older gensweep: open it on the runs table too
                    self.client.set_experiment_tag(self.experiment_id, key, value)
            parents = self.client.search_runs(
                [self.experiment_id],
                f"tags.`gensweep.sweep_id` = '{sweep}' and tags.`gensweep.role` = 'sweep'",
                max_results=1,
            )
        except Exception as exc:  # MLflow raises many types for an unreachable or broken store
            if is_disk_full(exc):
                raise disk_full_error(tracking_uri) from None
            raise GensweepError(f"cannot reach MLflow tracking store {tracking_uri}: {str(exc).splitlines()[0]}") from None
        if parents:
            self.parent_id = parents[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{pipeline} {sweep}",
                tags={"gensweep.role": "sweep", "gensweep.sweep_id": sweep, "gensweep.pipeline": pipeline,
                      "gensweep.code_version": version_text(), **(tags or {})},
            )
            self.parent_id = run.info.run_id
            self._log(self.parent_id, params=settings)

    def _children(self) -> dict[str, str]:
        """trial_key -> run_id of this sweep's child runs, read once (paginated)."""
        children, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`gensweep.sweep_id` = '{self.sweep}' and tags.`gensweep.role` = 'trial'",
                max_results=10000, page_token=token,
            )
            for run in page:
                children[run.data.tags["gensweep.trial_key"]] = run.info.run_id
            token = page.token
            if not token:
                return children

    def _log(self, run_id: str, params: dict | None = None, metrics: list | None = None) -> None:
        """Params and (name, value, step) metrics in as few log_batch calls as MLflow's limits allow."""
        from mlflow.entities import Metric, Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted((params or {}).items())]
        now = int(time.time() * 1000)
        values = [Metric(name, float(value), now, int(step)) for name, value, step in metrics or []]
        param_chunks = [items[i : i + MAX_PARAMS] for i in range(0, len(items), MAX_PARAMS)]
        metric_chunks = [values[i : i + MAX_METRICS] for i in range(0, len(values), MAX_METRICS)]
        for params_chunk, metrics_chunk in zip_longest(param_chunks, metric_chunks, fillvalue=[]):
            self.client.log_batch(run_id, params=params_chunk, metrics=metrics_chunk)

    def drop_unrecorded(self, recorded: set[str]) -> int:
        """Delete the child runs whose trial_key has no Parquet row (a crash came between the two writes); return how many.

        Parquet is the record of what finished: a dropped configuration is run
        (grid) or sampled (search) again, and logged again then.
        """
        if self.logged <= recorded:
            return 0
        dropped = {key: run_id for key, run_id in self._children().items() if key not in recorded}
        for key, run_id in dropped.items():
            self.client.delete_run(run_id)
            self.logged.discard(key)
        return len(dropped)

    def _tags(self, log: TrialLog) -> dict[str, str]:
        return {
            "mlflow.parentRunId": self.parent_id,
            "gensweep.role": "trial",
            "gensweep.sweep_id": self.sweep,
            "gensweep.trial_key": log.key,
            "gensweep.pipeline": self.pipeline,
            "gensweep.code_version": version_text(),
            "method": str(log.config.get("method", "")),
            "seed": str(log.config.get("seed", "")),
        }

    def log_trial(self, key: str, label: str, config: dict, curve: list[dict], final: dict) -> None:
        """Create one trial's child run (params, metric history by step, final metrics); once per key."""
        self.log_trials([TrialLog(key, label, config, curve, final)])

    def log_trials(self, logs: list[TrialLog]) -> dict[str, str]:
        """Create the child runs of ``logs`` (each key once): one transaction on SQL stores, REST calls otherwise.

        Returns trial_key -> run_id of the runs created now. Only the keys stay
        in memory (a sweep of 100,000 configurations keeps 100,000 short keys).
        """
        logs = [log for log in {log.key: log for log in logs}.values() if log.key not in self.logged]
        if not logs:
            return {}
        store = self._sql_store()
        if store is None:
            ids = {}
            for log in logs:
                start, end = log.times()
                run = self.client.create_run(self.experiment_id, start_time=start, run_name=f"{log.label} {log.key[:8]}",
                                             tags=self._tags(log))
                self._log(run.info.run_id, params=log.config, metrics=_metrics_of(log))
                self.client.set_terminated(run.info.run_id, "FINISHED", end_time=end)
                ids[log.key] = run.info.run_id
        else:
            ids = self._insert(store, logs)
        self.logged.update(ids)
        return ids

    def _sql_store(self):
        """MLflow's SqlAlchemyStore behind the client, or None (tracking server, file store)."""
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        return store if isinstance(store, SqlAlchemyStore) else None

    def _insert(self, store, logs: list[TrialLog]) -> dict[str, str]:
        """Insert FINISHED runs with tags, params, metrics and latest metrics: one transaction, one multi-row insert per table."""
        from mlflow.entities import RunStatus, SourceType
        from mlflow.entities.lifecycle_stage import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from mlflow.utils.uri import append_to_uri_path

        artifact_root = self.client.get_experiment(self.experiment_id).artifact_location
        now = int(time.time() * 1000)
        ids: dict[str, str] = {}
        runs, tags, params, metrics, latest = [], [], [], [], []
        for log in logs:
            run_id = uuid.uuid4().hex
            name = f"{log.label} {log.key[:8]}"
            start, end = log.times()
            runs.append(dict(
                run_uuid=run_id, name=name, source_type=SourceType.to_string(SourceType.UNKNOWN), source_name="",
                entry_point_name="", user_id="unknown", status=RunStatus.to_string(RunStatus.FINISHED), start_time=start,
                end_time=end, deleted_time=None, source_version="", lifecycle_stage=LifecycleStage.ACTIVE,
                artifact_uri=append_to_uri_path(artifact_root, run_id, "artifacts"), experiment_id=int(self.experiment_id),
            ))
            tags += [dict(key=k, value=str(v)[:8000], run_uuid=run_id) for k, v in {**self._tags(log), "mlflow.runName": name}.items()]
            params += [dict(key=k, value=str(v)[:6000], run_uuid=run_id) for k, v in sorted(log.config.items())]
            last: dict[str, dict] = {}
            for key, value, step in dict.fromkeys(_metrics_of(log)):  # duplicates dropped, as log_batch does
                is_nan, value = store.sanitize_metric_value(float(value))
                metric = dict(key=key, value=value, timestamp=now, step=int(step), is_nan=is_nan, run_uuid=run_id)
                metrics.append(metric)
                if key not in last or (metric["step"], value) > (last[key]["step"], last[key]["value"]):  # one timestamp
                    last[key] = metric
            latest += list(last.values())
            ids[log.key] = run_id
        with store.ManagedSessionMaker(read_only=False) as session:
            for model, rows in ((SqlRun, runs), (SqlTag, tags), (SqlParam, params), (SqlMetric, metrics), (SqlLatestMetric, latest)):
                if rows:
                    session.execute(model.__table__.insert(), rows)
        return ids

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(self.parent_id, status)


def _recorded_uri(results: str, sweep: str) -> str | None:
    """The tracking URI a sweep was run with (its record's ``mlflow_uri``), or None for the default."""
    from pipelines.engine.record import sweep_records

    try:
        return next((r.get("mlflow_uri") for r in sweep_records(results) if r.get("sweep") == sweep), None)
    except (OSError, GensweepError):
        return None


def log_report(results: str, pipeline: str, sweep: str, out_dir: str) -> str:
    """Log the files of a rendered report (``report.md``, figures) as artifacts of the sweep's parent run; return one line.

    The tracking store is the one the sweep ran with (its record), else
    RESULTS/mlflow.db. A report is never refused for MLflow's sake: a missing
    store, parent run or an error leaves the report as it is and says why.
    """
    uri = _recorded_uri(results, sweep) or (None if "://" in results else default_tracking_uri(results))
    if uri is None:
        return "MLflow: no tracking store recorded for this sweep; report not logged"
    db = _sqlite_file(uri)
    if db is not None and not db.is_file():
        return f"MLflow: no store at {db}; report not logged"
    try:
        from mlflow.tracking import MlflowClient

        check_server(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(f"gensweep/{pipeline}")
        parents = client.search_runs(
            [experiment.experiment_id], f"tags.`gensweep.sweep_id` = '{sweep}' and tags.`gensweep.role` = 'sweep'", max_results=1,
        ) if experiment else []
        if not parents:
            return f"MLflow: sweep {sweep} has no parent run in {uri}; report not logged"
        run = parents[0].info
        client.log_artifacts(run.run_id, str(out_dir))
    except Exception as exc:  # MLflow and the artifact stores raise many types
        return f"MLflow: report not logged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return f"MLflow: report logged as artifacts of run {run.run_id} ({run.artifact_uri})"
