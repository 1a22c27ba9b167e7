"""The start-up version check: a library outside its tested range ends `gensweep run` and `resume` in one line, exit 2."""
from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT
from pipelines import cli
from pipelines.engine import runner, versions


@pytest.mark.parametrize("version, inside", [
    ("3.17.2", True), ("3.0", True), ("3.0.0", True), ("3.18.0", False), ("3.18.0rc1", False), ("3.18.0.dev0", False),
    ("2.22.1", False), ("4.0.0", False), ("3.17.2+local", True),
])
def test_in_range_compares_release_numbers(version, inside):
    assert versions.in_range(version, "3.0", "3.18") is inside


def test_installed_versions_are_inside_the_tested_ranges():
    versions.check_versions()
    assert all(versions.installed_version(name) for name in versions.TESTED)


def test_pyproject_declares_the_tested_ranges():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, (lowest, untested) in versions.TESTED.items():
        (spec,) = [d for d in declared if re.match(rf"{name}(\[[^\]]*\])?[<>=]", d)]
        assert spec.endswith(f">={lowest},<{untested}"), (name, spec)


@pytest.fixture
def untested_mlflow(monkeypatch):
    real = versions.installed_version
    monkeypatch.setattr(versions, "installed_version", lambda name: "3.18.0" if name == "mlflow" else real(name))
    monkeypatch.delenv(versions.SKIP_ENV, raising=False)

    def started(sweep):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(runner, "run_sweep", started)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gensweep: error: "), err
    return err.strip()


def test_run_with_an_untested_version_ends_in_one_line(untested_mlflow, tmp_path, capsys):
    assert cli.main(["run", "cmnist-table", "--results", str(tmp_path / "results")]) == 2
    line = _one_error_line(capsys)
    assert "mlflow 3.18.0 is installed" in line and "tested with mlflow>=3.0,<3.18" in line
    assert not (tmp_path / "results").exists()


def test_resume_with_an_untested_version_ends_in_one_line(untested_mlflow, tmp_path, capsys):
    results = tmp_path / "results"
    (results / "sweeps").mkdir(parents=True)
    record = {"sweep": "smoke-0000000000", "pipeline": "cmnist-table", "preset": "smoke", "overrides": [],
              "started_at": "2026-01-01T00:00:00+00:00"}
    (results / "sweeps" / "smoke-0000000000.json").write_text(json.dumps(record))
    assert cli.main(["resume", str(results)]) == 2
    assert "mlflow 3.18.0 is installed" in capsys.readouterr().err.splitlines()[-1]


def test_the_check_can_be_skipped_to_try_a_new_release(untested_mlflow, monkeypatch):
    with pytest.raises(versions.GensweepError, match="mlflow 3.18.0"):
        versions.check_versions()
    monkeypatch.setenv(versions.SKIP_ENV, "1")
    versions.check_versions()
