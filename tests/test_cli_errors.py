"""Bad input gives one clear error line on stderr and a non-zero exit, before any work starts."""
import subprocess

import pytest

from conftest import GENSWEEP, ROOT


def gensweep(*args, tmp_path):
    return subprocess.run(GENSWEEP + list(args), cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


CASES = {
    "unknown pipeline": (["run", "nope"], "unknown pipeline 'nope'"),
    "unknown preset": (["run", "cmnist-table", "--preset", "huge"], "unknown preset 'huge'"),
    "bad value": (["run", "cmnist-table", "--set", "restarts=many"], "bad value for restarts: 'many' is not int"),
    "unknown setting": (["run", "cmnist-table", "--set", "colour=red"], "unknown setting 'colour'"),
    "not key=value": (["run", "cmnist-table", "--set", "steps"], "bad --set 'steps': expected key=value"),
    "unknown method": (["run", "cmnist-table", "--set", "methods=erm,dro"], "bad value for methods: 'dro' (choose from erm, irm"),
    "negative steps": (["run", "cmnist-table", "--set", "steps=-5"], "bad value for steps: -5 (must be >= 1)"),
    "zero restarts": (["run", "rex-vs-irm", "--set", "restarts=0"], "bad value for restarts: 0 (must be >= 1)"),
    "negative learning rate": (["run", "toy-sem", "--set", "lr=-0.1"], "bad value for lr: -0.1 (must be > 0)"),
    "odd SEM dimension": (["run", "toy-sem", "--set", "dim=7"], "bad value for dim: 7 (must be even)"),
    "unknown sampler": (["run", "cmnist-search", "--set", "sampler=grid"], "bad value for sampler: 'grid'"),
    "missing data dir": (["run", "cmnist-table", "--data-dir", "no/such/dir"], "data directory not found"),
    "unreachable ray": (["run", "cmnist-table", "--address", "127.0.0.1:9"], "cannot reach Ray at 127.0.0.1:9"),
    "unreachable mlflow": (["run", "cmnist-table", "--mlflow-uri", "http://127.0.0.1:9"], "cannot reach MLflow tracking server"),
    "report without results": (["report", "cmnist-table"], "no results for cmnist-table"),
    "unknown command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "zero local cpus": (["run", "cmnist-table", "--num-cpus", "0"], "bad --num-cpus 0"),
    "port out of range": (["ui", "--port", "99999"], "bad --port 99999: a TCP port is 1-65535"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_clear_error_line(case, tmp_path):
    args, message = CASES[case]
    proc = gensweep(*args, tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gensweep: error: ") and message in lines[0]


def test_corrupt_data_file(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    proc = gensweep("run", "cmnist-table", "--data-dir", str(data), tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "cannot read data file" in proc.stderr and "t10k-images" in proc.stderr


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results directory should go")
    proc = gensweep("run", "cmnist-table", "--results", str(blocker / "results"), tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "is not writable" in proc.stderr


def test_ui_on_a_port_in_use(tmp_path):
    import socket

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mlflow.db").write_bytes(b"")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = gensweep("ui", "--results", str(tmp_path / "results"), "--port", str(port), tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"cannot serve the MLflow UI on 127.0.0.1:{port}" in proc.stderr
