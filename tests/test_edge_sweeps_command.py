"""``gensweep sweeps [RESULTS]``: every recorded sweep with its pipeline, preset, data, code version, done / total."""
from __future__ import annotations

from types import SimpleNamespace

from pipelines import cli, registry
from pipelines.engine.codeversion import version_text
from pipelines.engine.record import save_sweep_args, update_sweep_record
from pipelines.engine.spec import NoData, resolve_settings
from pipelines.engine.store import ResultStore


def _sweep(sid: str, preset: str = "smoke"):
    pipeline = registry.get("toy-sem")
    return SimpleNamespace(id=sid, pipeline=pipeline, preset=preset, overrides=[], data_dir=None, address=None,
                           mlflow_uri=None, optuna_storage=None, num_cpus=None, settings=resolve_settings(pipeline, preset, []))


def test_sweeps_lists_each_recorded_sweep_with_its_progress(tmp_path, capsys):
    store = ResultStore.open(str(tmp_path))
    save_sweep_args(store, _sweep("smoke-aaa"), NoData("toy-sem"))
    for i in range(3):
        store.write_trial("toy-sem", "smoke-aaa", f"k{i}", {"method": "erm"}, [])
    update_sweep_record(store, "smoke-aaa", total=3, finished=3, complete=True)
    save_sweep_args(store, _sweep("paper-bbb", "paper"), NoData("toy-sem"))
    store.write_trial("toy-sem", "paper-bbb", "k0", {"method": "erm"}, [])
    update_sweep_record(store, "paper-bbb", total=4, finished=1, complete=False)
    save_sweep_args(store, _sweep("paper-bbb", "paper"), NoData("toy-sem"))  # started again: the total is kept

    assert cli.main(["sweeps", str(tmp_path)]) == 0
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first.startswith("smoke-aaa  toy-sem  preset smoke  3/3 done, complete") and f"gensweep {version_text()}" in first
    assert "data: toy-sem" in first
    assert second.startswith("paper-bbb  toy-sem  preset paper  1/4 done, incomplete")
    assert cli.main(["sweeps", str(tmp_path / "empty")]) == 2
