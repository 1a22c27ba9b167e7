"""Compaction of a sweep's Parquet files: same rows read back, idempotent, safe to kill at any point."""
from __future__ import annotations

import pandas as pd
import pytest

from pipelines import cli
from pipelines.store import PART_PREFIX, ResultStore


def _fill(store: ResultStore, n: int = 6) -> None:
    for i in range(n):
        row = {"method": "irm" if i % 2 else "erm", "seed": i, "test_acc": 0.1 * i, "label": f"run {i}"}
        if i >= 3:
            row["late_column"] = float(i)  # a column only later files have
        curve = [{"step": s, "test_acc": 0.1 * i + s} for s in range(3)]
        store.write_trial("p", "s1", f"key{i}", row, curve)
    store.write_trial("p", "s2", "other", {"method": "erm", "test_acc": 1.0}, [])


def _frames(store: ResultStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = store.read("trials", "p").sort_values("trial_key").reset_index(drop=True)
    curves = store.read("curves", "p").sort_values(["trial_key", "step"]).reset_index(drop=True)
    return trials[sorted(trials.columns)], curves[sorted(curves.columns)]


def test_compacted_results_read_back_identical_and_compaction_is_idempotent(tmp_path):
    store = ResultStore.open(str(tmp_path))
    _fill(store)
    before = _frames(store)
    assert store.compact("p", "s1") == {"trials": 6, "curves": 6}
    after = _frames(store)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    files = store._listing("trials", "p", "s1")
    assert len(files) == 1 and files[0].rsplit("/", 1)[1].startswith(PART_PREFIX)
    assert store.finished_keys("p", "s1") == {f"key{i}" for i in range(6)}
    assert store.compact("p", "s1") == {"trials": 0, "curves": 0}  # nothing left to merge
    store.write_trial("p", "s1", "key6", {"method": "erm", "test_acc": 0.7}, [{"step": 0, "test_acc": 0.7}])
    assert store.compact("p", "s1") == {"trials": 2, "curves": 2}  # the part file and the new trial
    assert len(store.read("trials", "p", "s1")) == 7 and len(store._listing("trials", "p", "s1")) == 1


@pytest.mark.parametrize("crash_at", ["journal", "trials output", "curves output", "deleting inputs", "journal delete"])
def test_compaction_killed_at_any_point_loses_and_duplicates_nothing(tmp_path, crash_at):
    store = ResultStore.open(str(tmp_path))
    _fill(store)
    before = _frames(store)

    class Killed(Exception):
        pass

    killed = ResultStore.open(str(tmp_path))
    deletes = {"n": 0}

    def write(path, table):
        if (crash_at == "trials output" and "/trials/" in path) or (crash_at == "curves output" and "/curves/" in path):
            raise Killed
        ResultStore._write(killed, path, table)

    def delete(path):
        deletes["n"] += 1
        if (crash_at == "deleting inputs" and deletes["n"] == 4) or (crash_at == "journal delete" and path.endswith(".json")):
            raise Killed
        ResultStore._delete(killed, path)

    def write_bytes(path, data):
        if crash_at == "journal":
            raise Killed
        ResultStore._write_bytes(killed, path, data)

    for name, hook in (("_write", write), ("_delete", delete), ("_write_bytes", write_bytes)):
        object.__setattr__(killed, name, hook)  # the store is a frozen dataclass
    with pytest.raises(Killed):
        killed.compact("p", "s1")

    # Readers see every row exactly once while the journal is still there ...
    during = _frames(store)
    pd.testing.assert_frame_equal(before[0], during[0])
    pd.testing.assert_frame_equal(before[1], during[1])
    assert store.finished_keys("p", "s1") == {f"key{i}" for i in range(6)}
    # ... and after the next compaction (or sweep) settles it.
    store.compact("p", "s1")
    after = _frames(store)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    assert not store._journals() and len(store._listing("trials", "p", "s1")) == 1


def test_cli_compact(tmp_path, capsys):
    store = ResultStore.open(str(tmp_path))
    _fill(store)
    assert cli.main(["compact", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "p s1: 6 rows; merged 6 trial files, 6 curve files" in out and "p s2: 1 rows; merged 0" in out
    assert cli.main(["compact", str(tmp_path / "empty")]) == 2
