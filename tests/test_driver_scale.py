"""A sweep of instant trainables on a two-node Ray cluster on loopback: every configuration recorded once, files compacted.

The pipeline is the one of ``benchmarks/driver_scale.py`` (which prints the
timings); here the counts are checked: Parquet rows = MLflow child runs =
Optuna COMPLETE trials = the budget, a handful of Parquet files (write
batches), two after compaction. 1,000 configurations by default, 20,000 with
``-m slow``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import ROOT
from pipelines.engine.tracking import default_tracking_uri

spec = importlib.util.spec_from_file_location("driver_scale", ROOT / "benchmarks" / "driver_scale.py")
driver_scale = importlib.util.module_from_spec(spec)
sys.modules["driver_scale"] = driver_scale
spec.loader.exec_module(driver_scale)


@pytest.fixture(scope="module")
def loopback_cluster():
    import ray
    import ray.cloudpickle as cloudpickle
    from ray.cluster_utils import Cluster

    cloudpickle.register_pickle_by_value(driver_scale)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _check(tmp_path, cluster, n: int, block: int) -> driver_scale.Figures:
    figures = driver_scale.run_one(n, block, cluster.address, str(tmp_path))
    print(f"{n} configs: {1000 * figures.seconds / n:.2f} ms/config, RSS {figures.rss_before:.0f} -> {figures.rss_after:.0f} MB")
    assert figures.files <= n // 256 + n // block + 4  # write batches, not one file per configuration
    assert figures.files_compacted == 1
    results = Path(figures.results)
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["sample"] for t in trials) == list(range(n))
    client = MlflowClient(default_tracking_uri(str(results)))
    (experiment,) = [e for e in client.search_experiments() if e.name == "gensweep/instant"]
    children = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'", max_results=50000)
    assert len(children) == n and len({r.data.tags["gensweep.trial_key"] for r in children}) == n
    return figures


@pytest.mark.e2e
def test_a_thousand_configurations_in_blocks_on_two_nodes(tmp_path, loopback_cluster, monkeypatch):
    import pipelines.engine.runner as runner

    monkeypatch.setattr(runner, "COMPACT_FILES", 2)  # a finished sweep with more files compacts itself
    figures = _check(tmp_path, loopback_cluster, 1000, 250)
    assert figures.compacted_by_sweep == figures.files > 2


@pytest.mark.e2e
@pytest.mark.slow
def test_twenty_thousand_configurations_in_blocks_on_two_nodes(tmp_path, loopback_cluster):
    _check(tmp_path, loopback_cluster, 20000, 500)


def test_a_finished_block_leaves_tunes_trial():
    """Tune keeps every Trial: once recorded, a block's configurations, metrics and long tag are dropped from it."""
    from ray.tune.experiment import Trial

    from pipelines.engine.sink import _release

    block = [{"x": 0.1 * i, "lr": 1e-3} for i in range(300)]
    trial = Trial("instant", config={"study": "s", "block": block}, stub=True, experiment_tag="1_" + "x" * 5000,
                  evaluated_params={"study": "s", "block": block})
    trial.run_metadata.last_result = {"step": 0, "metrics": [{"loss": 1.0}] * 300, "config": {"study": "s", "block": list(block)},
                                      "experiment_tag": trial.experiment_tag}
    before = sum(map(len, trial.get_json_state()))
    _release(trial)
    after = sum(map(len, trial.get_json_state()))
    assert after < 3000 < 30 * after < before  # cached JSON states recomputed, without the block
    assert trial.config == trial.evaluated_params == {"study": "s", "block": "300 configurations (recorded)"}
    assert trial.last_result["config"]["block"] == "300 configurations (recorded)" and "metrics" not in trial.last_result
    assert len(trial.experiment_tag) == len(trial.last_result["experiment_tag"]) == 100
    assert len(block) == 300  # the caller's list itself is untouched (the searcher still holds it)


def test_progress_shows_a_blocks_best_configuration():
    from pipelines.engine.sink import _best_index

    assert _best_index([0.3, 0.1, float("nan"), None, 0.2], "min") == 1
    assert _best_index([0.3, 0.9, 0.5], "max") == 1
    assert _best_index([None, float("nan")], "min") == 1  # no number: the last one
