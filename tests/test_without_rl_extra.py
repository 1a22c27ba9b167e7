"""Installed without the ``rl`` extra: every command works, and rl-spurious says in one line how to install it.

Every Python process of these tests (the CLI, and the Ray workers it starts)
runs with a ``sitecustomize`` that makes the RL packages unimportable, as on
a machine where ``pip install -e .`` was run without ``[rl]``.
"""
import os
import subprocess

import pytest

from conftest import GENSWEEP, ROOT, blocking_sitecustomize

BLOCKED = ("gymnasium", "dm_control", "mujoco", "shimmy")
SITECUSTOMIZE = blocking_sitecustomize(BLOCKED)


@pytest.fixture(scope="module")
def without_rl(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    check = subprocess.run([GENSWEEP[0], "-c", "import gymnasium"], capture_output=True, text=True, env=env)
    assert check.returncode == 1 and "No module named 'gymnasium'" in check.stderr  # the block holds
    return env


def gensweep(env, tmp_path, *args, timeout=300):
    return subprocess.run(GENSWEEP + list(args), cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env)


def test_list_marks_rl_spurious_as_needing_the_extra(without_rl, tmp_path):
    proc = gensweep(without_rl, tmp_path, "list")
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("rl-spurious:")]
    assert "[needs the 'rl' extra: pip install 'gensweep[rl]']" in line
    assert not [line for line in proc.stdout.splitlines() if line.startswith("cmnist-table:") and "needs" in line]


def test_run_rl_spurious_says_how_to_install_it(without_rl, tmp_path):
    proc = gensweep(without_rl, tmp_path, "run", "rl-spurious", "--results", str(tmp_path / "results"))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line == ("gensweep: error: rl-spurious needs the 'rl' extra (gymnasium, dm_control, mujoco, shimmy not "
                    "installed): pip install 'gensweep[rl]'")
    assert not (tmp_path / "results").exists()  # refused before anything started


@pytest.mark.e2e
def test_cmnist_table_runs_and_reports_without_it(without_rl, tmp_path):
    results = str(tmp_path / "results")
    tiny = ["--set", "methods=erm,irm", "--set", "restarts=1", "--set", "steps=11", "--set", "eval_every=5"]
    proc = gensweep(without_rl, tmp_path, "run", "cmnist-table", "--results", results, "--num-cpus", "2", *tiny)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = gensweep(without_rl, tmp_path, "report", "cmnist-table", "--results", results)
    assert report.returncode == 0 and "| IRM |" in report.stdout and "| ERM |" in report.stdout, report.stderr
