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


# ---------------------------------------------------------------------------- storage that cannot be written

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from conftest import GENSWEEP, ROOT  # noqa: E402


def _no_ray(monkeypatch) -> None:
    import pipelines.engine.runner as runner

    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: pytest.fail("Ray started before the storage was checked"))


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gensweep: error: "), lines
    return lines[0]


def test_a_missing_optuna_directory_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    _no_ray(monkeypatch)
    db = tmp_path / "nowhere" / "optuna.db"
    code = cli.main(["run", "cmnist-search", "--results", str(tmp_path / "r"), "--optuna-storage", f"sqlite:///{db}"])
    assert code == 2 and f"{db}: its directory {db.parent} does not exist" in _one_line(capsys)


def test_a_bad_optuna_url_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    _no_ray(monkeypatch)
    code = cli.main(["run", "cmnist-search", "--results", str(tmp_path / "r"), "--optuna-storage", "nosuchdb://x/y"])
    assert code == 2 and "cannot open Optuna storage nosuchdb://x/y" in _one_line(capsys)


def _read_only(command: list[str], path: Path) -> list[str]:
    """``command`` run with ``path`` (a file or a folder) bind-mounted read-only in a mount namespace of its own."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind -o ro "$1" "$1" && shift && exec "$@"', "sh", str(path), *command]


def _run_read_only(command: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI with ``path`` read-only: a mount namespace as root (root writes through chmod), else chmod."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            return subprocess.run(GENSWEEP + command, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
        finally:
            path.chmod(mode)
    if shutil.which("unshare") is None or subprocess.run(_read_only(["true"], path), capture_output=True).returncode:
        pytest.skip("root without mount namespaces (unshare -m): cannot make a read-only file here")
    return subprocess.run(_read_only(GENSWEEP + command, path), cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def _assert_refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("gensweep: error: "), proc.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.parametrize("database", ["mlflow.db", "optuna.db"])
def test_a_read_only_database_is_refused_in_one_line_naming_it(tmp_path, database):
    import optuna

    from pipelines.engine.tracking import MlflowSweep, default_tracking_uri

    results = tmp_path / "results"
    results.mkdir()
    MlflowSweep(default_tracking_uri(str(results)), "cmnist-search", "earlier", {})  # both databases exist, as after a sweep
    optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}")
    proc = _run_read_only(["run", "cmnist-search", "--results", str(results)], results / database, tmp_path)
    _assert_refused(proc, str(results / database), "read-only")
    assert not (results / "tune").exists()  # nothing ran


def test_report_into_a_read_only_out_is_refused_in_one_line(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    _two_pipelines(ResultStore.open(str(results)))
    proc = _run_read_only(["report", "toy-sem", "--results", str(results), "--out", str(out)], out, tmp_path)
    _assert_refused(proc, "cannot write the report to", str(out))
