"""An interrupted cmnist-search resumes to exactly its budget: no lost and no duplicated rows or trials."""
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import GENSWEEP, ROOT
from pipelines.engine.store import ResultStore

pytestmark = pytest.mark.e2e  # every test here drives a real Ray sweep

BUDGET = 6


def _trial_files(results: Path) -> list[Path]:
    return list((results / "parquet" / "trials").rglob("*.parquet"))


def test_interrupted_search_resumes(tmp_path):
    results = tmp_path / "results"
    command = GENSWEEP + [
        "run", "cmnist-search", "--results", str(results), "--num-cpus", "2",
        "--set", f"num_samples={BUDGET}", "--set", "steps=301", "--set", "eval_every=100",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 240
    while len(_trial_files(results)) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # Ctrl+C mid-sweep
    assert first.wait(timeout=120) != 0, (tmp_path / "first.log").read_text()
    interrupted = len(_trial_files(results))
    assert 2 <= interrupted < BUDGET, (tmp_path / "first.log").read_text()

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{BUDGET - interrupted} of {BUDGET} configurations to run" in second.stdout

    rows = ResultStore.open(str(results)).read("trials", "cmnist-search")
    assert len(rows) == BUDGET and rows["trial_key"].is_unique
    assert not rows.duplicated(["hidden", "l2", "lr", "anneal_iters", "penalty_weight"]).any()
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == BUDGET
    assert not any(t.state == TrialState.RUNNING for t in trials)
