"""Batched MLflow child runs on a SQL store equal the runs MLflow's own client calls write."""
from __future__ import annotations

import math

from mlflow.tracking import MlflowClient

from pipelines.engine.tracking import MlflowSweep, TrialLog, default_tracking_uri


def _logs(prefix: str) -> list[TrialLog]:
    out = []
    for i in range(3):
        curve = [{"step": s, "acc": 0.1 * s + i, "loss": 1.0 / (s + 1), "flag": True} for s in range(4)]
        final = {**curve[-1], "nan_metric": float("nan"), "big": math.inf}
        out.append(TrialLog(f"{prefix}{i}", f"irm seed={i}", {"method": "irm", "seed": i, "lr": 1e-3, "hidden": [1, 2]}, curve, final))
    return out


def _view(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k not in ("gensweep.trial_key", "mlflow.runName")}
    history = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)] for k in run.data.metrics}
    return {
        "status": run.info.status, "lifecycle": run.info.lifecycle_stage, "params": run.data.params, "tags": tags,
        "metrics": {k: (None if math.isnan(v) else v) for k, v in run.data.metrics.items()},
        "history": {k: [(s, None if math.isnan(v) else v) for s, v in h] for k, h in history.items()},
        "timed": run.info.end_time is not None and run.info.start_time is not None,
        "artifacts": run.info.artifact_uri.endswith(f"{run_id}/artifacts"),
    }


def test_batched_runs_equal_client_runs(tmp_path, monkeypatch):
    uri = default_tracking_uri(str(tmp_path))
    batched = MlflowSweep(uri, "p", "sweep", {"a": 1})
    assert batched._sql_store() is not None
    batched_ids = batched.log_trials(_logs("b"))
    plain = MlflowSweep(uri, "p", "sweep", {"a": 1})
    monkeypatch.setattr(MlflowSweep, "_sql_store", lambda self: None)  # the REST-style path: create_run, log_batch, set_terminated
    plain_ids = plain.log_trials(_logs("c"))

    client = MlflowClient(uri)
    for i in range(3):
        assert _view(client, batched_ids[f"b{i}"]) == _view(client, plain_ids[f"c{i}"])
    children = client.search_runs([batched.experiment_id], f"tags.`mlflow.parentRunId` = '{batched.parent_id}'")
    assert len(children) == 6
    assert client.get_run(batched_ids["b0"]).data.tags["mlflow.runName"] == "irm seed=0 b0"


def test_a_key_is_logged_once_and_a_reopened_sweep_sees_batched_children(tmp_path):
    uri = default_tracking_uri(str(tmp_path))
    sweep = MlflowSweep(uri, "p", "sweep", {})
    logs = _logs("k")
    assert sorted(sweep.log_trials(logs + logs[:1])) == ["k0", "k1", "k2"]
    assert sweep.log_trials(logs[1:]) == {}
    again = MlflowSweep(uri, "p", "sweep", {})
    assert sorted(again.logged) == ["k0", "k1", "k2"]
    assert again.drop_unrecorded({"k0", "k2"}) == 1
    assert sorted(again._children()) == sorted(again.logged) == ["k0", "k2"]
