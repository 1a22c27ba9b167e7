"""End to end on a real local Ray runtime: a tiny cmnist-table sweep into Parquet, MLflow (SQLite) and a report."""
import pytest
from mlflow.tracking import MlflowClient

from pipelines import registry
from pipelines.rex import cmnist_table
from pipelines.cli import main
from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import resolve_settings
from pipelines.engine.store import ResultStore

pytestmark = pytest.mark.e2e  # every test here drives a real Ray sweep

TINY = ["steps=21", "grayscale_steps=11", "restarts=1", "eval_every=10"]


@pytest.fixture(scope="module")
def finished_sweep(ray_session, tmp_path_factory):
    results = str(tmp_path_factory.mktemp("results"))
    pipeline = registry.get("cmnist-table")
    sweep = Sweep(pipeline, "smoke", resolve_settings(pipeline, "smoke", TINY), results, quiet=True)
    return sweep, run_sweep(sweep)


def test_every_method_has_a_parquet_row_and_curve(finished_sweep):
    sweep, summary = finished_sweep
    assert summary.complete and summary.ran == 6 and summary.failed == 0
    store = ResultStore.open(sweep.results)
    trials = store.read("trials", "cmnist-table")
    assert sorted(trials["method"]) == sorted(cmnist_table.ORDER) and set(trials["stage"]) == {"table"}
    assert trials["trial_key"].is_unique and set(trials["sweep"]) == {sweep.id}
    assert trials["test_acc"].between(0, 1).all() and trials["hostname"].notna().all()
    curves = store.read("curves", "cmnist-table", sweep.id)
    steps = curves.groupby("trial_key")["step"].apply(sorted).to_dict()
    gray = trials.loc[trials["method"] == "grayscale", "trial_key"].item()
    assert steps.pop(gray) == [0, 10] and all(s == [0, 10, 20] for s in steps.values())


def test_mlflow_has_a_parent_and_one_child_per_trial(finished_sweep):
    sweep, _ = finished_sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep.results}/mlflow.db")
    experiment = client.get_experiment_by_name("gensweep/cmnist-table")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gensweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["method"] for r in children) == sorted(cmnist_table.ORDER)
    irm = next(r for r in children if r.data.tags["method"] == "irm")
    assert irm.data.params["hidden"] == "64" and irm.data.tags["seed"] == "0"  # the smoke preset's width
    history = client.get_metric_history(irm.info.run_id, "test_acc")
    assert [m.step for m in history] == [0, 10, 20]


def test_rerun_finds_finished_work(finished_sweep):
    sweep, _ = finished_sweep
    again = run_sweep(Sweep(sweep.pipeline, "smoke", sweep.settings, sweep.results, quiet=True))
    assert again.ran == 0 and again.skipped == 6
    assert len(ResultStore.open(sweep.results).read("trials", "cmnist-table")) == 6
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep.results}/mlflow.db")
    experiment = client.get_experiment_by_name("gensweep/cmnist-table")
    assert len(client.search_runs([experiment.experiment_id])) == 7  # 1 parent + 6 children, nothing duplicated


def test_report_renders_table_and_figures(finished_sweep, capsys):
    sweep, _ = finished_sweep
    assert main(["report", "cmnist-table", "--results", sweep.results]) == 0
    out = capsys.readouterr().out
    assert "| V-REx |" in out and "| Grayscale oracle |" in out and "68.7 ± 0.9" in out
    report_dir = f"{sweep.results}/reports/cmnist-table/{sweep.id}"
    import os

    assert {"report.md", "table.png", "curves.png"} <= set(os.listdir(report_dir))


def test_rows_and_mlflow_record_the_reduction_each_method_trained_with(finished_sweep):
    sweep, _ = finished_sweep
    trials = ResultStore.open(sweep.results).read("trials", "cmnist-table")
    trained = dict(zip(trials["method"], trials["risk_reduction"]))
    # setting "method": each row follows its reference code (IRM code: mean; REx code: sum)
    assert trained == {"erm": "mean", "irm": "mean", "grayscale": "mean", "vrex": "sum", "mmrex": "sum", "ri": "sum"}
    assert set(trials["risk_reduction_setting"]) == {"method"}
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep.results}/mlflow.db")
    experiment = client.get_experiment_by_name("gensweep/cmnist-table")
    vrex = next(r for r in client.search_runs([experiment.experiment_id], "tags.method = 'vrex'"))
    assert vrex.data.params["risk_reduction"] == "sum" and vrex.data.params["risk_reduction_setting"] == "method"


def test_report_names_its_data_preset_and_changed_settings(finished_sweep, capsys):
    sweep, _ = finished_sweep
    assert main(["report", "cmnist-table", "--results", sweep.results]) == 0
    out = capsys.readouterr().out
    assert "- **Data:** embedded deformed digits: 12,000 images drawn at 28x28 from scikit-learn's 1,797 8x8 digits" in out
    assert "the last 2,000 (the test domain) from 299 source digits that none of the first 10,000 comes from" in out
    assert "- **Preset:** smoke" in out
    assert "- **Settings changed from the preset:** restarts=1, steps=21, grayscale_steps=11, eval_every=10" in out


def test_smoke_preset_deviates_in_hidden_width_and_the_report_names_it(finished_sweep, capsys):
    sweep, _ = finished_sweep
    trials = ResultStore.open(sweep.results).read("trials", "cmnist-table")
    widths = dict(zip(trials["method"], trials["hidden"].astype(int)))
    assert widths == {"vrex": 64, "irm": 64, "mmrex": 64, "ri": 64, "erm": 64, "grayscale": 83}  # the oracle keeps its own
    assert main(["report", "cmnist-table", "--results", sweep.results]) == 0
    out = capsys.readouterr().out
    assert ("Deliberate deviation from the published hyperparameters, hidden width: V-REx 64 (published 390); "
            "IRM 64 (published 390); MM-REx 64 (published 390); RI 64 (published 390); ERM 64 (published 256) "
            "(setting hidden).") in out
