"""Parquet store (unified schemas, one file per configuration) and settings parsing / naming."""
import pytest

from pipelines.rex import cmnist_table
from pipelines.engine.spec import GensweepError, parse_value, resolve_settings, sweep_id, trial_key
from pipelines.engine.store import ResultStore


def test_rows_with_different_columns_are_all_read(tmp_path):
    store = ResultStore.open(str(tmp_path))
    store.write_trial("p", "s1", "a", {"method": "erm", "test_acc": 0.1}, [{"step": 0, "test_acc": 0.2}])
    store.write_trial("p", "s1", "b", {"method": "irm", "test_acc": 0.3, "extra": 7}, [])
    store.write_trial("q", "s2", "c", {"variant": "class"}, [])
    rows = store.read("trials", "p").sort_values("trial_key")
    assert rows["trial_key"].tolist() == ["a", "b"] and rows["extra"].isna().tolist() == [True, False]
    assert set(rows["pipeline"]) == {"p"} and set(rows["sweep"]) == {"s1"}
    assert "variant" in store.read("trials").columns  # all pipelines: columns of every file kept
    assert store.read("curves", "p", "s1")["step"].tolist() == [0]
    assert store.finished_keys("p", "s1") == {"a", "b"} and store.finished_keys("p", "nope") == set()
    assert not list(tmp_path.rglob("*.tmp"))


def test_rewriting_a_configuration_replaces_its_row(tmp_path):
    store = ResultStore.open(str(tmp_path))
    for value in (0.1, 0.2):
        store.write_trial("p", "s", "k", {"test_acc": value}, [])
    assert store.read("trials", "p")["test_acc"].tolist() == [0.2]


def test_settings_are_typed_and_validated():
    settings = resolve_settings(cmnist_table.PIPELINE, "smoke", ["restarts=3", "methods=erm, irm", "steps=11"])
    assert settings["restarts"] == 3 and settings["methods"] == ["erm", "irm"] and settings["steps"] == 11
    assert parse_value("0.25", 1.0, "x") == 0.25 and parse_value("yes", False, "x") is True
    with pytest.raises(GensweepError, match="bad value for gpus_per_trial"):
        resolve_settings(cmnist_table.PIPELINE, "smoke", ["gpus_per_trial=half"])


def test_cmnist_table_paper_preset_trains_the_published_widths():
    import pandas as pd

    from core.cmnist import hparams

    (stage,) = cmnist_table.stages(resolve_settings(cmnist_table.PIPELINE, "paper", []))
    assert {c["method"]: c["hidden"] for c in stage.plan.configs} == {m: hparams.published(m)["hidden"] for m in cmnist_table.ORDER}
    (smoke,) = cmnist_table.stages(resolve_settings(cmnist_table.PIPELINE, "smoke", ["hidden=32"]))
    assert {c["method"]: c["hidden"] for c in smoke.plan.configs} == {**{m: 32 for m in cmnist_table.ORDER}, "grayscale": 83}
    frame = pd.DataFrame([{"method": c["method"], "hidden": c["hidden"]} for c in stage.plan.configs])
    assert cmnist_table.deviation_note(frame) == ""


def test_names_are_deterministic():
    settings = resolve_settings(cmnist_table.PIPELINE, "smoke", [])
    assert sweep_id("cmnist-table", "smoke", settings, "digits:1") == sweep_id("cmnist-table", "smoke", dict(settings), "digits:1")
    assert sweep_id("cmnist-table", "smoke", settings, "digits:1") != sweep_id("cmnist-table", "smoke", settings, "idx:2")
    assert trial_key({"a": 1, "b": 2}) == trial_key({"b": 2, "a": 1}) != trial_key({"a": 1, "b": 3})


def test_the_runner_imports_no_core_module():
    import subprocess
    import sys

    code = "import sys, pipelines.engine.runner; print(sorted(m for m in sys.modules if m == 'core' or m.startswith('core.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_and_the_runner_import_no_ray_until_a_stage_runs():
    """The Tune searchers and the sink subclass Ray types: the runner imports them only in a stage run."""
    import subprocess
    import sys

    code = ("import sys, pipelines.cli, pipelines.engine.runner, pipelines.engine.studies, pipelines.registry as r; r.pipelines(); "
            "print(sorted(m for m in sys.modules if m == \"ray\" or m.startswith(\"ray.\")))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_level_settings_do_not_change_the_sweep_id():
    base = resolve_settings(cmnist_table.PIPELINE, "smoke", [])
    more = resolve_settings(cmnist_table.PIPELINE, "smoke", ["cpus_per_trial=2", "max_failures=5"])
    assert sweep_id("cmnist-table", "smoke", base, "d") == sweep_id("cmnist-table", "smoke", more, "d")
    other = resolve_settings(cmnist_table.PIPELINE, "smoke", ["risk_reduction=mean"])
    assert sweep_id("cmnist-table", "smoke", base, "d") != sweep_id("cmnist-table", "smoke", other, "d")


def test_progress_shows_a_running_trial_when_nothing_finished_for_a_while(capsys):
    from pipelines.engine.progress import Progress

    progress = Progress("rl-spurious", total=2, running_every_s=60.0)
    progress.running(lambda: "erm seed=0 at step 5000: train_return=57.6")
    out = capsys.readouterr().out
    assert out.startswith("[rl-spurious] 0/2 done |") and out.rstrip().endswith("running: erm seed=0 at step 5000: train_return=57.6")
    progress.running(lambda: "erm seed=1 at step 5000: train_return=6.0")  # within the minute: nothing
    assert capsys.readouterr().out == ""
    Progress("x", total=1, quiet=True, running_every_s=0.0).running(lambda: "anything")
    assert capsys.readouterr().out == ""
