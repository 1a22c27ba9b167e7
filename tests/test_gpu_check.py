"""benchmarks/gpu_check.py at toy sizes on the CPU, as it runs on the GPU machine: without Ray, MLflow, Optuna,
gymnasium or dm_control importable (a ``sitecustomize`` blocks them in every process), from the repository root.

So the script cannot rot between the rare sessions lent a GPU: every part must finish ``ok`` here.
"""
import json
import os
import subprocess
import sys

from conftest import ROOT, blocking_sitecustomize

ABSENT_ON_THE_GPU_MACHINE = ("ray", "mlflow", "optuna", "gymnasium", "dm_control", "mujoco", "shimmy", "sqlalchemy")
SITECUSTOMIZE = blocking_sitecustomize(ABSENT_ON_THE_GPU_MACHINE)


def test_every_part_runs_on_cpu_quick_without_the_cluster_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(site)}  # the script itself puts the repository on the path
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out),
                           "--budget-scale", "4"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert list(results["parts"]) == ["device", "tests", "search", "rl", "memorization", "domainbed"]
    assert {name: part["status"] for name, part in results["parts"].items()} == dict.fromkeys(results["parts"], "ok")
    parts = {name: part["result"] for name, part in results["parts"].items()}
    assert parts["device"]["peak_fp32_tflops"] > 0 and parts["device"]["name"].startswith("CPU")
    assert parts["tests"]["returncode"] in (0, 5) and "passed" not in parts["tests"]["summary"]  # no CUDA: skipped/deselected
    search = parts["search"]
    assert search["block"] == 2 and search["speedup"] == search["block_run"]["configs_per_hour"] / search["k1"]["configs_per_hour"]
    assert 0 < search["block_run"]["fraction_of_peak"] and search["search_hours_block"] > 0
    assert parts["rl"]["updates_per_s_one_agent"] > 0 and parts["rl"]["agents_per_gpu"] == 2
    assert parts["memorization"]["easy_runs"] == 5 and parts["memorization"]["grid_widths"] == [16, 64]
    domainbed = parts["domainbed"]
    assert set(domainbed["cases"]) == {"block (stacked forward)", "block (model by model)", "one at a time", "DomainBed-like loop"}
    assert domainbed["default"] == "block (model by model)" and domainbed["steps"] == 3  # CPU default forward, quick size
    assert domainbed["speedup"] > 0 and "projected DomainBed sweep" in domainbed["projection"]
    table = (out / "gpu_check.md").read_text()
    assert f"| search | speedup | {search['speedup']:.4g} |" in table and "| rl | status | ok" in table
    assert "[gpu_check" in proc.stdout and "search: starting" in proc.stdout  # progress as it goes


def test_a_part_over_its_budget_is_cut_and_the_rest_still_runs(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out),
                           "--parts", "search,device", "--budget-scale", "0.002"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["parts"]["search"]["status"] == "timeout" and results["parts"]["device"]["status"] in ("ok", "timeout")
    assert "not ok: search" in proc.stdout
