"""MLflow tracking, written by the driver only: one parent run per sweep, one child run per trial.

The experiment is ``gensweep/<pipeline>``. Runs carry the tags
``gensweep.sweep_id`` and (children) ``gensweep.trial_key``, so a resumed
sweep reopens its parent run and never logs a finished trial twice.
"""
from __future__ import annotations

import socket
import time
from itertools import zip_longest
from pathlib import Path
from urllib.parse import urlparse

from pipelines.spec import GensweepError

MAX_PARAMS = 100  # MLflow's log_batch limits: 100 params, 1000 entities in all
MAX_METRICS = 900


def default_tracking_uri(results: str) -> str:
    """The SQLite store inside a local results directory."""
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one clear line when an http(s) tracking server does not answer."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise GensweepError(f"cannot reach MLflow tracking server {tracking_uri}: {exc.strerror or exc}") from None


class MlflowSweep:
    """A sweep's parent run and the writer of its child runs."""

    def __init__(self, tracking_uri: str, pipeline: str, sweep: str, settings: dict):
        from mlflow.tracking import MlflowClient

        check_reachable(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.pipeline, self.sweep = pipeline, sweep
        try:
            name = f"gensweep/{pipeline}"
            experiment = self.client.get_experiment_by_name(name)
            self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            parents = self.client.search_runs(
                [self.experiment_id],
                f"tags.`gensweep.sweep_id` = '{sweep}' and tags.`gensweep.role` = 'sweep'",
                max_results=1,
            )
        except Exception as exc:  # MLflow raises many types for an unreachable or broken store
            raise GensweepError(f"cannot reach MLflow tracking store {tracking_uri}: {str(exc).splitlines()[0]}") from None
        if parents:
            self.parent_id = parents[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{pipeline} {sweep}",
                tags={"gensweep.role": "sweep", "gensweep.sweep_id": sweep, "gensweep.pipeline": pipeline},
            )
            self.parent_id = run.info.run_id
            self._log(self.parent_id, params=settings)
        self.children = self._children()

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
        dropped = [key for key in self.children if key not in recorded]
        for key in dropped:
            self.client.delete_run(self.children.pop(key))
        return len(dropped)

    def log_trial(self, key: str, label: str, config: dict, curve: list[dict], final: dict) -> None:
        """Create the trial's child run (params, metric history by step, final metrics); once per key."""
        if key in self.children:
            return
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "gensweep.role": "trial",
            "gensweep.sweep_id": self.sweep,
            "gensweep.trial_key": key,
            "gensweep.pipeline": self.pipeline,
            "method": str(config.get("method", "")),
            "seed": str(config.get("seed", "")),
        }
        run = self.client.create_run(self.experiment_id, run_name=f"{label} {key[:8]}", tags=tags)
        numeric = lambda row: {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}  # noqa: E731
        history = [(name, value, row.get("step", i)) for i, row in enumerate(curve) for name, value in numeric(row).items() if name != "step"]
        last_step = int(final.get("step", len(curve)))
        finals = [(f"final_{name}", value, last_step) for name, value in numeric(final).items() if name != "step"]
        self._log(run.info.run_id, params=config, metrics=history + finals)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        self.children[key] = run.info.run_id

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(self.parent_id, status)
