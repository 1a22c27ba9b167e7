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
run takes its three REST calls.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from urllib.parse import urlparse

from pipelines.engine.codeversion import version_text
from pipelines.engine.dblock import sqlite_lock
from pipelines.engine.runtime import check_reachable
from pipelines.engine.spec import GensweepError, disk_full_error, is_disk_full

# MLflow 3 opens an experiment without this tag on its GenAI overview (traces, judges); tagged as model training,
# the UI opens on the runs table.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAMS = 100  # MLflow's log_batch limits: 100 params, 1000 entities in all
MAX_METRICS = 900


def default_tracking_uri(results: str) -> str:
    """The SQLite store inside a local results directory."""
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


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
            self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name, tags=EXPERIMENT_TAGS)
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
                run = self.client.create_run(self.experiment_id, run_name=f"{log.label} {log.key[:8]}", tags=self._tags(log))
                self._log(run.info.run_id, params=log.config, metrics=_metrics_of(log))
                self.client.set_terminated(run.info.run_id, "FINISHED")
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
            runs.append(dict(
                run_uuid=run_id, name=name, source_type=SourceType.to_string(SourceType.UNKNOWN), source_name="",
                entry_point_name="", user_id="unknown", status=RunStatus.to_string(RunStatus.FINISHED), start_time=now,
                end_time=now, deleted_time=None, source_version="", lifecycle_stage=LifecycleStage.ACTIVE,
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
