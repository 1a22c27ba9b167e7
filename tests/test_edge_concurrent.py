"""Sweeps started at once into a new results directory: the MLflow and Optuna databases are created once, by one of them."""
from __future__ import annotations

import multiprocessing as mp
import traceback

STARTS = 4  # processes opening the stores at the same moment


def _open_stores(results: str, i: int, barrier, errors) -> None:
    try:
        from pipelines.engine.runner import Sweep, _optuna_storage
        from pipelines.engine.tracking import MlflowSweep, default_tracking_uri

        barrier.wait(timeout=120)
        MlflowSweep(default_tracking_uri(results), "toy-sem", f"sweep{i}", {"steps": i})
        _optuna_storage(Sweep(None, "smoke", {}, results))
    except BaseException:
        errors.put(f"process {i}: {traceback.format_exc()}")


def test_sweeps_started_at_once_into_a_new_directory_share_one_mlflow_and_optuna_database(tmp_path):
    from mlflow.tracking import MlflowClient

    results = str(tmp_path / "new")
    (tmp_path / "new").mkdir()  # as run_sweep's writability check leaves it: no database yet
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(STARTS), ctx.Queue()
    procs = [ctx.Process(target=_open_stores, args=(results, i, barrier, errors)) for i in range(STARTS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, "\n".join(found)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "gensweep/toy-sem"]
    parents = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'sweep'")
    assert sorted(run.data.tags["gensweep.sweep_id"] for run in parents) == [f"sweep{i}" for i in range(STARTS)]
