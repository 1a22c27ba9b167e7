"""A crash between a configuration's three writes (MLflow, then Parquet, then Optuna's tell) loses and duplicates nothing.

Parquet is the record: on restart, MLflow child runs without a Parquet row are
deleted, and Optuna trials left RUNNING are told COMPLETE when their
configuration has a Parquet row, FAIL otherwise; paired draws, recorded
into their study after their row, are added from the row when a crash
came between the two.
"""
import os
import sqlite3
import subprocess

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import GENSWEEP, ROOT
from pipelines.engine.studies import prepare_study
from pipelines.engine.store import ResultStore
from pipelines.engine.tracking import MlflowSweep, default_tracking_uri

BUDGET = 4


def test_left_trials_are_settled_from_the_result_rows(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    left = []
    for x in (0.25, 0.5, 0.75, 1.0):
        trial = study.ask()
        storage.set_trial_param(trial._trial_id, "x", x, optuna.distributions.FloatDistribution(0.0, 1.0))
        left.append(trial)
    done = left.pop()
    study.tell(done, 0.1)
    # Rows: the first left trial's result reached Parquet; a row whose metric is NaN cannot be told COMPLETE.
    rows = [{"x": 0.25, "acc": 0.9}, {"x": 0.75, "acc": float("nan")}, {"x": 1.0, "acc": 0.1}]
    assert prepare_study(storage, "s", "maximize", rows, "acc") == 4
    trials = {t.number: t for t in optuna.load_study(study_name="s", storage=storage).get_trials()}
    assert trials[left[0].number].state == TrialState.COMPLETE and trials[left[0].number].value == 0.9
    assert trials[left[1].number].state == TrialState.FAIL
    assert trials[left[2].number].state == TrialState.FAIL
    assert trials[done.number].value == 0.1


def test_child_runs_without_a_result_row_are_dropped(tmp_path):
    uri = default_tracking_uri(str(tmp_path))
    first = MlflowSweep(uri, "p", "sweep1", {"a": 1})
    for key in ("k1", "k2", "k3"):
        first.log_trial(key, key, {"method": "erm"}, [{"step": 0, "acc": 0.5}], {"step": 0, "acc": 0.5})
    again = MlflowSweep(uri, "p", "sweep1", {"a": 1})
    assert again.drop_unrecorded({"k1", "k3"}) == 1
    again.log_trial("k1", "k1", {"method": "erm"}, [], {"acc": 0.5})  # recorded: not logged twice
    runs = MlflowClient(uri).search_runs([again.experiment_id], "tags.`gensweep.role` = 'trial'")
    assert sorted(r.data.tags["gensweep.trial_key"] for r in runs) == ["k1", "k3"]


def _forget_trial(db, sample: int) -> None:
    """Delete the paired draw ``sample``'s trial, as a driver killed before recording it leaves the study."""
    with sqlite3.connect(db) as con:
        (trial_id,) = con.execute(
            "select trial_id from trial_user_attributes where key = 'sample' and value_json = ?", (str(sample),)
        ).fetchone()
        for table in ("trial_params", "trial_values", "trial_user_attributes", "trial_system_attributes",
                      "trial_intermediate_values", "trials"):
            con.execute(f"delete from {table} where trial_id = ?", (trial_id,))
        # Trial numbers stay dense, as in a study that never had the trial.
        for number, (tid,) in enumerate(con.execute("select trial_id from trials order by trial_id").fetchall()):
            con.execute("update trials set number = ? where trial_id = ?", (number, tid))


@pytest.mark.e2e
def test_resume_after_a_crash_between_the_writes(tmp_path):
    results = tmp_path / "results"
    command = GENSWEEP + ["run", "rex-vs-irm", "--results", str(results), "--num-cpus", "2"]
    for item in ["stages=search", "variants=class", "ps=0.1", "methods=irm", f"num_samples={BUDGET}", "block_size=2", "steps=3", "eval_every=3"]:
        command += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    store = ResultStore.open(str(results))
    rows = store.read("trials", "rex-vs-irm").sort_values("sample")
    sweep = rows["sweep"].iloc[0]
    # Crash after MLflow, before Parquet: sample 0 has a child run but no row, and no trial in its study.
    lost = rows.iloc[0]
    os.remove(results / "parquet" / "trials" / "pipeline=rex-vs-irm" / f"sweep={sweep}" / f"{lost['trial_key']}.parquet")
    _forget_trial(results / "optuna.db", int(lost["sample"]))
    # Crash after Parquet, before the study recorded it: sample 1 has its row but no trial.
    kept = rows.iloc[1]
    _forget_trial(results / "optuna.db", int(kept["sample"]))

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"1 of {BUDGET} configurations to run" in second.stdout
    rows = store.read("trials", "rex-vs-irm")
    assert len(rows) == BUDGET and rows["trial_key"].is_unique and sorted(rows["sample"]) == list(range(BUDGET))
    assert lost["trial_key"] in set(rows["trial_key"])  # the same draw, run again
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * BUDGET
    by_sample = {t.user_attrs["sample"]: t for t in trials}
    assert sorted(by_sample) == list(range(BUDGET))
    assert by_sample[int(kept["sample"])].value == kept["min_acc"]  # recorded from its row, not run again
    assert by_sample[int(kept["sample"])].params == {k: kept[k] for k in by_sample[int(kept["sample"])].params}
    client = MlflowClient(default_tracking_uri(str(results)))
    (experiment,) = [e for e in client.search_experiments() if e.name == "gensweep/rex-vs-irm"]
    children = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'")
    assert sorted(r.data.tags["gensweep.trial_key"] for r in children) == sorted(rows["trial_key"])


# The driver killed inside a write batch: after the batch's MLflow runs and some of its Parquet rows, before its tells.
KILL_AFTER_ROWS = """
import os, sys
from pipelines import cli
from pipelines.engine.store import ResultStore

limit, written = int(os.environ["GENSWEEP_TEST_KILL_AFTER_ROWS"]), []
real = ResultStore.write_trial

def write_trial(self, *args, **kwargs):
    real(self, *args, **kwargs)
    written.append(1)
    if len(written) == limit:
        os._exit(9)  # SIGKILL-like: no cleanup, no flush

ResultStore.write_trial = write_trial
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("kill_after", [2])  # inside the first batch: a block of 3 rows
def test_driver_killed_inside_a_write_batch_resumes_to_exactly_the_budget(tmp_path, kill_after):
    results = tmp_path / "results"
    args = ["run", "rex-vs-irm", "--results", str(results), "--num-cpus", "2"]
    for item in ["stages=search", "variants=class", "ps=0.1", "methods=irm", "num_samples=6", "block_size=3", "steps=3", "eval_every=3"]:
        args += ["--set", item]
    script = tmp_path / "killed.py"
    script.write_text(KILL_AFTER_ROWS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENSWEEP_TEST_KILL_AFTER_ROWS": str(kill_after)}
    first = subprocess.run([GENSWEEP[0], str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 9, first.stdout + first.stderr
    store = ResultStore.open(str(results))
    assert len(store.read("trials", "rex-vs-irm")) == kill_after  # cut inside the batch: rows written so far stay

    second = subprocess.run(GENSWEEP + args, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{6 - kill_after} of 6 configurations to run" in second.stdout
    rows = store.read("trials", "rex-vs-irm")
    assert len(rows) == 6 and rows["trial_key"].is_unique and sorted(rows["sample"]) == list(range(6))
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and sorted(t.user_attrs["sample"] for t in complete) == list(range(6))
    client = MlflowClient(default_tracking_uri(str(results)))
    (experiment,) = [e for e in client.search_experiments() if e.name == "gensweep/rex-vs-irm"]
    children = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'")
    assert sorted(r.data.tags["gensweep.trial_key"] for r in children) == sorted(rows["trial_key"])
