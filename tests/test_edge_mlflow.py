"""MLflow as a user browses it (issue 33): child runs last as long as their configuration trained, each sweep's report
and figures are artifacts of its parent run, stored under the results directory, and ``gensweep ui`` prints the URL
that opens MLflow 3's UI on the runs (``?workflowType=machine_learning``), not on its GenAI overview.

Real MLflow on SQLite throughout; the ``e2e`` tests share one tiny toy-sem sweep on a real Ray runtime.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines import cli, registry
from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import resolve_settings
from pipelines.engine.store import ResultStore
from pipelines.engine.tracking import EXPERIMENT_TAGS, MlflowSweep, TrialLog, default_tracking_uri, log_report

from conftest import GENSWEEP, ROOT

TINY = ["settings=FOU", "methods=erm,irm", "repetitions=1", "steps=100", "eval_every=50"]


def _parent(client: MlflowClient, experiment_id: str, sweep: str):
    runs = client.search_runs([experiment_id], f"tags.`gensweep.sweep_id` = '{sweep}' and tags.`gensweep.role` = 'sweep'")
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def reported_sweep(ray_session, tmp_path_factory):
    """A finished two-configuration toy-sem sweep and its rendered report (``gensweep report``)."""
    results = str(tmp_path_factory.mktemp("results"))
    pipeline = registry.get("toy-sem")
    sweep = Sweep(pipeline, "smoke", resolve_settings(pipeline, "smoke", TINY), results, quiet=True)
    summary = run_sweep(sweep)
    assert summary.complete and summary.ran == 2
    assert cli.main(["report", "toy-sem", "--results", results]) == 0
    client = MlflowClient(default_tracking_uri(results))
    experiment = client.get_experiment_by_name("gensweep/toy-sem")
    return sweep, client, experiment


@pytest.mark.e2e
def test_child_runs_last_as_long_as_their_row_says(reported_sweep):
    sweep, client, experiment = reported_sweep
    rows = ResultStore.open(sweep.results).read("trials", "toy-sem", sweep.id).set_index("trial_key")
    children = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'")
    assert len(children) == len(rows) == 2
    for run in children:
        row = rows.loc[run.data.tags["gensweep.trial_key"]]
        start, end = run.info.start_time, run.info.end_time
        assert end - start > 0  # the IRM trial trains 100 Adam steps: never 0 ms
        assert end == round(row["finished_at"].timestamp() * 1000)
        assert abs((end - start) - row["wall_s"] * 1000) <= 1


@pytest.mark.e2e
def test_the_report_and_its_figures_are_artifacts_of_the_parent_run_under_the_results(reported_sweep, capsys):
    sweep, client, experiment = reported_sweep
    results = Path(sweep.results).resolve()
    assert experiment.artifact_location == str(results / "mlartifacts" / "toy-sem")
    parent = _parent(client, experiment.experiment_id, sweep.id)
    report_dir = results / "reports" / "toy-sem" / sweep.id
    files = sorted(p.name for p in report_dir.iterdir())
    assert "report.md" in files and any(name.endswith(".png") for name in files)
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == files
    stored = Path(parent.info.artifact_uri)
    assert stored.is_relative_to(results / "mlartifacts") and (stored / "report.md").read_text() == (report_dir / "report.md").read_text()
    assert cli.main(["report", "toy-sem", "--results", sweep.results]) == 0  # rendered again: logged again, same files
    assert f"report logged as artifacts of run {parent.info.run_id}" in capsys.readouterr().out
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == files


def test_times_of_a_child_run_are_its_rows_on_both_write_paths(tmp_path, monkeypatch):
    uri = default_tracking_uri(str(tmp_path))
    finished = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    log = lambda key: TrialLog(key, "erm", {"method": "erm"}, [{"step": 0, "acc": 0.5}], {"acc": 0.5}, finished, 2.5)
    batched = MlflowSweep(uri, "p", "s", {}).log_trials([log("b")])["b"]
    monkeypatch.setattr(MlflowSweep, "_sql_store", lambda self: None)  # a tracking server's path: create_run, set_terminated
    plain = MlflowSweep(uri, "p", "s", {}).log_trials([log("c")])["c"]
    client, end = MlflowClient(uri), round(finished.timestamp() * 1000)
    for run_id in (batched, plain):
        info = client.get_run(run_id).info
        assert (info.start_time, info.end_time) == (end - 2500, end)
    assert log("x").times() == (end - 2500, end)
    assert TrialLog("y", "erm", {}, [], {}, finished - timedelta(hours=1), 0.0).times() == (end - 3600_000,) * 2


def test_an_experiment_made_before_keeps_its_artifact_location_and_gets_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's old default: ./mlruns/<id> of the working directory
    results = tmp_path / "results"
    results.mkdir()
    uri = default_tracking_uri(str(results))
    old = MlflowClient(uri).create_experiment("gensweep/p", tags=EXPERIMENT_TAGS)
    before = MlflowClient(uri).get_experiment(old).artifact_location
    sweep = MlflowSweep(uri, "p", "s1", {"a": 1})
    sweep.log_trials([TrialLog("k", "erm", {"method": "erm"}, [], {"acc": 1.0}, None, 1.0)])
    sweep.finish()
    assert sweep.experiment_id == old and MlflowClient(uri).get_experiment(old).artifact_location == before
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("# p\n")
    assert log_report(str(results), "p", "s1", str(out)).startswith(f"MLflow: report logged as artifacts of run {sweep.parent_id}")
    assert [a.path for a in MlflowClient(uri).list_artifacts(sweep.parent_id)] == ["report.md"]
    assert "no parent run" in log_report(str(results), "p", "other", str(out))
    assert "no store" in log_report(str(tmp_path / "elsewhere"), "p", "s1", str(out))  # and no database is created
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ui_prints_the_url_that_opens_each_experiment_on_its_runs(tmp_path):
    uri = default_tracking_uri(str(tmp_path))
    ids = {name: MlflowSweep(uri, name, "s", {}).experiment_id for name in ("toy-sem", "domainbed")}
    port = _free_port()
    ui = subprocess.Popen([*GENSWEEP, "ui", "--results", str(tmp_path), "--port", str(port)], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = [ui.stdout.readline().strip() for _ in range(3)]  # printed before MLflow starts
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
    assert lines[0].startswith("mlflow ui --backend-store-uri sqlite:///")
    assert lines[1:] == [
        f"open gensweep/{name}: http://127.0.0.1:{port}/#/experiments/{ids[name]}?workflowType=machine_learning"
        for name in ("domainbed", "toy-sem")
    ]
