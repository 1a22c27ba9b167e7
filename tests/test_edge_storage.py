"""Storage edge cases: results of several pipelines with clashing column types, storage that cannot be written."""
from __future__ import annotations

from pipelines import cli
from pipelines.engine.store import ResultStore


def _two_pipelines(store: ResultStore) -> None:
    """toy-sem's ``hidden`` is a flag, Colored MNIST's a width: no one Arrow schema holds both."""
    for i in range(3):
        store.write_trial("toy-sem", "s1", f"a{i}", {"hidden": bool(i % 2), "test_acc": 0.1 * i}, [{"step": 0, "loss": 1.0}])
        store.write_trial("cmnist-table", "s2", f"b{i}", {"hidden": 256, "test_acc": 0.2 * i}, [{"step": 0, "loss": 2.0}])


def test_compact_without_pipeline_merges_each_pipeline_on_its_own(tmp_path, capsys):
    store = ResultStore.open(str(tmp_path))
    _two_pipelines(store)
    assert cli.main(["compact", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "toy-sem s1: 3 rows; merged 3 trial files" in out and "cmnist-table s2: 3 rows; merged 3 trial files" in out
    assert store.read("trials", "toy-sem")["hidden"].tolist() == [False, True, False]
    assert store.read("trials", "cmnist-table")["hidden"].tolist() == [256] * 3
    assert cli.main(["compact", str(tmp_path), "--pipeline", "toy-sem"]) == 0  # already one file: nothing to merge
    assert cli.main(["compact", str(tmp_path), "--sweep", "nope"]) == 2


def test_reading_every_pipeline_keeps_each_pipelines_types(tmp_path):
    store = ResultStore.open(str(tmp_path))
    _two_pipelines(store)
    rows = store.read("trials")
    assert len(rows) == 6 and set(rows["pipeline"]) == {"toy-sem", "cmnist-table"}
    assert rows[rows["pipeline"] == "toy-sem"]["hidden"].tolist() == [False, True, False]  # flags, not their text
    assert store.pairs() == [("cmnist-table", "s2"), ("toy-sem", "s1")]


def test_one_pipelines_sweeps_with_clashing_types_still_read_and_report(tmp_path):
    store = ResultStore.open(str(tmp_path))
    store.write_trial("p", "old", "a", {"hidden": True, "test_acc": 0.5}, [])
    store.write_trial("p", "new", "b", {"hidden": 64, "test_acc": 0.6}, [])
    assert store.sweeps("p") == ["old", "new"]
    assert len(store.read("trials", "p")) == 2
    assert store.compact("p", "new") == {"trials": 0, "curves": 0}
