"""A results directory whose disk fills mid-sweep: one line naming where and saying how to resume, a non-zero exit,
and, once space is freed, the same command finishes with every configuration once.

On a machine where this test may mount a tmpfs (root), the disk really fills: a
small tmpfs holds the results and, once the sweep's first rows are written, a
file takes the rest of it. Elsewhere the Parquet writer is made to raise
ENOSPC after its first write batch (the same error a full disk raises).
"""
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from mlflow.tracking import MlflowClient

from conftest import GENSWEEP, ROOT
from pipelines.engine.store import ResultStore

pytestmark = pytest.mark.e2e  # every test here drives a real Ray sweep

SWEEP = ["--num-cpus", "1", "--set", "methods=erm,irm,vrex", "--set", "restarts=2", "--set", "steps=151", "--set", "eval_every=50"]
TRIALS = 6

SIMULATED = """
import errno, os, sys
from pipelines import cli
from pipelines.engine.store import ResultStore

real, calls = ResultStore.write_trials, []

def write_trials(self, pipeline, sweep, items):
    if calls:
        raise OSError(errno.ENOSPC, "No space left on device", f"{self.root}/parquet/trials/part.parquet")
    calls.append(1)
    real(self, pipeline, sweep, items)

ResultStore.write_trials = write_trials
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (or None where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    ok = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode == 0
    yield mount if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(directory) -> str:
    """Write a file until the device is full; its path."""
    path = os.path.join(directory, f"filler-{uuid.uuid4().hex}")
    with open(path, "wb", buffering=0) as out:  # unbuffered: nothing is left to flush (and fail) at close
        try:
            while True:
                out.write(b"\0" * (1 << 20))
        except OSError:
            pass
    return path


def test_full_disk_mid_sweep_gives_one_line_and_resumes(small_disk, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = (small_disk or tmp_path) / "results"
    args = ["run", "cmnist-table", "--results", str(results), *SWEEP]
    store = ResultStore.open(str(results))
    if small_disk is not None:
        proc = subprocess.Popen(GENSWEEP + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while not store.read("trials", "cmnist-table").shape[0] and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        filler = _fill(small_disk)  # the sweep's first batch is written: the disk fills now
        stdout, stderr = proc.communicate(timeout=300)
        code = proc.returncode
    else:
        script = tmp_path / "enospc.py"
        script.write_text(SIMULATED)
        first = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        stdout, stderr, code, filler = first.stdout, first.stderr, first.returncode, None
    assert code == 2, stdout[-3000:] + stderr[-3000:]
    # One line of gensweep's (Ray may print its own start-up warning before it), no traceback.
    lines = [line for line in stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and lines[0].startswith("gensweep: error: no space left on the device of "), stderr[-3000:]
    assert "re-run the same command to resume" in lines[0] and "Traceback" not in stderr
    assert str(results) in lines[0]  # names where: the MLflow database, the Parquet results or the Optuna storage in it
    kept = len(store.read("trials", "cmnist-table"))
    assert 1 <= kept < TRIALS

    if filler:
        os.remove(filler)  # space freed
    second = subprocess.run(GENSWEEP + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{TRIALS - kept} of {TRIALS} configurations to run" in second.stdout
    rows = store.read("trials", "cmnist-table")
    assert len(rows) == TRIALS and rows["trial_key"].is_unique
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gensweep/cmnist-table")
    children = client.search_runs([experiment.experiment_id], "tags.`gensweep.role` = 'trial'")
    assert sorted(r.data.tags["gensweep.trial_key"] for r in children) == sorted(rows["trial_key"])
