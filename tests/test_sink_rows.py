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
