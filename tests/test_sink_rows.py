"""The sink's rows, driven with stand-in Tune trials (no Ray runtime): what a row records about its trial."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from pipelines.engine.progress import Progress
from pipelines.engine.sink import ResultSink
from tasks.report import FINAL, REPORTED_AT, Report


class _Store:
    root = "memory"

    def __init__(self):
        self.rows = []

    def write_trials(self, pipeline, sweep, results):
        self.rows += [r.row for r in results]


class _Searcher:
    def record(self, trial_id, finals):
        return True


def _sink(store):
    stage = SimpleNamespace(scheduler=None, metric="acc", mode="max", label=lambda c: f"lr={c['lr']}")
    tracking = SimpleNamespace(uri="sqlite://", log_trials=lambda logs: None)
    return ResultSink(stage, "p", "s", store, tracking, _Searcher(), Progress("p", 1))


def test_a_row_finishes_when_its_trial_last_reported_not_when_its_batch_is_written():
    """A trial that reported just before its node died, written seconds later, is not a row "finished" after the death."""
    store = _Store()
    sink = _sink(store)
    reported = 1_700_000_000.25
    last = {**Report(7, True, [{"acc": 0.5}], "node-a").to_tune(), FINAL: True, REPORTED_AT: reported, "training_iteration": 1}
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.1}, last_result=last, status="TERMINATED", local_path="x")
    sink.on_trial_result(1, [trial], trial, last)
    sink.on_trial_complete(1, [trial], trial)
    sink.flush()
    (row,) = store.rows
    assert row["finished_at"] == datetime.fromtimestamp(reported, timezone.utc)
    assert row["node_id"] == "node-a"


def test_the_running_line_names_every_running_trial_at_its_latest_step(capsys):
    """Two trials in flight: the minute's line shows both (not only the one whose report came last); a finished one drops out."""
    sink = _sink(_Store())
    sink.progress.running_every_s = 0.0
    a = SimpleNamespace(trial_id="a", config={"lr": 0.1}, status="RUNNING", last_result={})
    b = SimpleNamespace(trial_id="b", config={"lr": 0.2}, status="RUNNING", last_result={})
    report = lambda step, acc: {**Report(step, False, [{"acc": acc}], "n").to_tune(), "training_iteration": step}
    sink.on_trial_result(1, [a, b], a, report(3, 0.5))
    sink.on_trial_result(2, [a, b], b, report(1, 0.25))
    sink.on_trial_result(3, [a, b], a, report(4, 0.75))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].endswith("running: lr=0.1 at step 4: acc=0.7500; lr=0.2 at step 1: acc=0.2500")
    b.status = "TERMINATED"
    sink.curves.pop("b")
    sink.on_trial_result(4, [a, b], a, report(5, 0.8))
    assert capsys.readouterr().out.rstrip().endswith("running: lr=0.1 at step 5: acc=0.8000")
