"""Compaction of a sweep's Parquet files: same rows read back, idempotent, safe to kill at any point."""
from __future__ import annotations

import pandas as pd
import pytest

from pipelines import cli
from pipelines.engine.store import PART_PREFIX, ResultStore


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


def test_a_large_write_batch_is_one_part_file_and_reads_like_single_files(tmp_path):
    from pipelines.engine.store import PART_MIN_ROWS, ConfigurationResult

    single, batched = ResultStore.open(str(tmp_path / "single")), ResultStore.open(str(tmp_path / "batched"))
    items = []
    for i in range(PART_MIN_ROWS + 2):
        row = {"method": "irm", "seed": i, "test_acc": 0.01 * i, **({"late": 1.5} if i % 3 == 0 else {})}
        items.append(ConfigurationResult(f"key{i:02d}", row, [{"step": s, "test_acc": s + i} for s in range(2)]))
    for item in items:
        single.write_trial("p", "s1", item.key, item.row, item.curve)
    batched.write_trials("p", "s1", items)
    assert len(batched._listing("trials", "p", "s1")) == 1 and len(batched._listing("curves", "p", "s1")) == 1
    for table in ("trials", "curves"):
        a, b = single.read(table, "p"), batched.read(table, "p")
        sort = ["trial_key"] + (["step"] if table == "curves" else [])
        a, b = (f.drop(columns=["finished_at"], errors="ignore").sort_values(sort).reset_index(drop=True) for f in (a, b))
        pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])
    assert batched.finished_keys("p", "s1") == {item.key for item in items}


def test_a_curves_part_without_its_trials_part_is_ignored(tmp_path):
    from pipelines.engine.store import PART_MIN_ROWS, ConfigurationResult

    store = ResultStore.open(str(tmp_path))
    items = [ConfigurationResult(f"k{i}", {"test_acc": 0.5}, [{"step": 0, "test_acc": 0.5}]) for i in range(PART_MIN_ROWS)]
    real_write = store._write

    def crash_after_curves(path, table):
        real_write(path, table)
        if "/curves/" in path:
            raise RuntimeError("killed between the curves part and the trials part")

    killed = ResultStore.open(str(tmp_path))
    object.__setattr__(killed, "_write", crash_after_curves)
    with pytest.raises(RuntimeError):
        killed.write_trials("p", "s1", items)
    assert store.read("curves", "p").empty and not store.finished_keys("p", "s1")
    store.write_trials("p", "s1", items)  # run again
    assert len(store.read("curves", "p")) == PART_MIN_ROWS and len(store.read("trials", "p")) == PART_MIN_ROWS
    store.compact("p", "s1")
    assert len(store.read("curves", "p")) == PART_MIN_ROWS and len(store.read("trials", "p")) == PART_MIN_ROWS
