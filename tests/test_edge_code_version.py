"""The code version (gensweep's version and the last code commit) in the sweep record and on every row; a sweep
whose results another code version recorded is resumed only with ``--allow-code-change``."""
from __future__ import annotations

import json

import pytest

from pipelines import cli, registry
from pipelines.engine.codeversion import code_version, version_text
from pipelines.engine.record import SWEEPS_DIR
from pipelines.engine.spec import resolve_settings, sweep_id
from pipelines.engine.store import ResultStore


class RayStarted(Exception):
    """Raised by the stand-in for init_ray: the command got past every check."""


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A toy-sem smoke sweep with one finished row and a record whose code version is set by the test."""
    import pipelines.engine.runner as runner

    def no_ray(*args, **kwargs):
        raise RayStarted

    monkeypatch.setattr(runner, "init_ray", no_ray)
    monkeypatch.delenv("GENSWEEP_ALLOW_CODE_CHANGE", raising=False)
    pipeline = registry.get("toy-sem")
    settings = resolve_settings(pipeline, "smoke", [])
    sid = sweep_id(pipeline.name, "smoke", settings, pipeline.load_data(settings, None).fingerprint, pipeline.all_settings())
    results = tmp_path / "results"
    ResultStore.open(str(results)).write_trial("toy-sem", sid, "k0", {"method": "erm", "causal_error": 0.1}, [])

    def record(code):
        (results / SWEEPS_DIR).mkdir(parents=True, exist_ok=True)
        args = {"sweep": sid, "pipeline": "toy-sem", "preset": "smoke", "overrides": [], "started_at": "2026-01-01T00:00:00"}
        (results / SWEEPS_DIR / f"{sid}.json").write_text(json.dumps({**args, **({"code": code} if code else {})}))
        return str(results)

    return sid, record


def test_a_sweep_recorded_by_another_code_version_is_refused_unless_allowed(recorded, capsys, monkeypatch):
    sid, record = recorded
    results = record({"gensweep": "0.0.9", "commit": "f" * 40, "dirty": False})
    assert cli.main(["run", "toy-sem", "--results", results]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"sweep {sid} was recorded with gensweep 0.0.9+gffffffffffff, this is {version_text()}" in line
    assert "--allow-code-change" in line
    assert cli.main(["resume", results]) == 2
    with pytest.raises(RayStarted):
        cli.main(["run", "toy-sem", "--results", results, "--allow-code-change"])
    with pytest.raises(RayStarted):
        cli.main(["resume", results, "--allow-code-change"])
    monkeypatch.setenv("GENSWEEP_ALLOW_CODE_CHANGE", "1")  # as the flag, for scripts
    with pytest.raises(RayStarted):
        cli.main(["run", "toy-sem", "--results", results])


@pytest.mark.parametrize("code", [None, "current"])
def test_a_sweep_recorded_without_a_version_or_with_this_one_resumes(recorded, code):
    _, record = recorded
    results = record(code_version() if code == "current" else None)
    with pytest.raises(RayStarted):
        cli.main(["run", "toy-sem", "--results", results])


def test_every_row_and_the_record_carry_the_code_version(tmp_path):
    from types import SimpleNamespace

    from pipelines.engine.record import load_sweep_args, save_sweep_args

    store = ResultStore.open(str(tmp_path))
    store.write_trial("p", "s", "k", {"test_acc": 0.5}, [])
    assert store.read("trials", "p")["code_version"].tolist() == [version_text()]
    version = code_version()
    assert version["gensweep"] and (version["commit"] is None or len(version["commit"]) == 40)
    pipeline = registry.get("toy-sem")
    sweep = SimpleNamespace(id="s", pipeline=pipeline, preset="smoke", overrides=[], data_dir=None, address=None,
                            mlflow_uri=None, optuna_storage=None, num_cpus=None, settings=resolve_settings(pipeline, "smoke", []))
    save_sweep_args(store, sweep)
    assert load_sweep_args(str(tmp_path), "s")["code"] == version
