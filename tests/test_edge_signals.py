"""SIGTERM (what ``timeout``, systemd and batch schedulers send) stops a sweep as Ctrl+C does: a clean stop, the
resume hint, exit 143; the same command then runs what is left, and every configuration is recorded exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import GENSWEEP, ROOT
from pipelines.engine.store import ResultStore

pytestmark = pytest.mark.e2e  # every test here drives a real Ray sweep

# 8 configurations of ~12 s each (1,500 steps took ~1.5 s: on a quiet machine all 8 were done before the first write
# batch, so SIGTERM came after the end): the first write batch (5 s after the first finished trial) leaves work to do.
TOY = ["--set", "settings=FOU,FEU", "--set", "methods=irm,vrex", "--set", "repetitions=2",
       "--set", "steps=12000", "--set", "eval_every=3000"]
TOTAL = 8


def _trial_files(results: Path) -> list[Path]:
    return list((results / "parquet" / "trials").rglob("*.parquet")) if results.exists() else []


def _children(results: Path) -> list[str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "gensweep/toy-sem"]
    runs = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'", max_results=1000)
    return [run.data.tags["gensweep.trial_key"] for run in runs]


def test_sigterm_mid_sweep_stops_cleanly_and_the_same_command_resumes_exactly_once(tmp_path):
    results = tmp_path / "results"
    command = GENSWEEP + ["run", "toy-sem", "--results", str(results), "--num-cpus", "2", *TOY]
    # Not a code-version test: a commit landing between the two runs must not refuse the second.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "GENSWEEP_ALLOW_CODE_CHANGE": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 300
        while not _trial_files(results) and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the sweep ended before a configuration was recorded:\n" + log.read_text()
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=180)
    text = log.read_text()
    assert code == 143, text
    assert "Traceback" not in text and "re-run the same command" in text, text
    recorded = len(ResultStore.open(str(results)).finished_keys("toy-sem", ResultStore.open(str(results)).pairs()[0][1]))
    assert 1 <= recorded < TOTAL, text

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{TOTAL - recorded} of {TOTAL} configurations to run" in second.stdout, second.stdout
    rows = ResultStore.open(str(results)).read("trials", "toy-sem")
    assert len(rows) == TOTAL and rows["trial_key"].is_unique
    children = _children(results)
    assert sorted(children) == sorted(rows["trial_key"])  # one MLflow child run per configuration
    assert not (results / "optuna.db").exists() or not optuna.get_all_study_summaries(f"sqlite:///{results / 'optuna.db'}")
    (record,) = [json.loads(p.read_text()) for p in (results / "sweeps").glob("*.json")]
    assert record["total"] == TOTAL and record["finished"] == TOTAL and record["complete"] and record["code"]["gensweep"]


@pytest.mark.parametrize("command", [["list"], ["report", "toy-sem", "--results", "{results}"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, command):
    """``gensweep report ... | head -1``: the reader is gone; no BrokenPipeError traceback, exit 141 (as SIGPIPE)."""
    results = tmp_path / "results"
    store = ResultStore.open(str(results))
    for i in range(2):
        row = {"hidden": True, "hetero": False, "scrambled": False, "method": "erm", "seed": i,
               "causal_error": 0.1, "noncausal_error": 0.2, "selected_reg": 0.0, "label": "erm", "stage": "grid"}
        store.write_trial("toy-sem", "smoke-x", f"k{i}", row, [{"step": 0, "causal_error": 0.1}])
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `head -1` has exited
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [part.format(results=results) for part in command]
    proc = subprocess.run(GENSWEEP + argv, cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    os.close(write_end)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
