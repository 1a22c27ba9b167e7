"""benchmarks/gpu_check.py at toy sizes on the CPU, as it runs on the GPU machine: without Ray, MLflow, Optuna,
gymnasium or dm_control importable (a ``sitecustomize`` blocks them in every process), from the repository root.

So the script cannot rot between the rare sessions lent a GPU: every part must finish ``ok`` here, with ``--no-budget``
(a loaded machine must not fail it: the DomainBed part once ran past its budget at load 5-6). Every projection it
prints (the §5.4.1 search, the RL study, DomainBed's sweep) is checked against a hand computation written out below.
"""
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT, blocking_sitecustomize

sys.path.insert(0, str(ROOT / "benchmarks"))

ABSENT_ON_THE_GPU_MACHINE = ("ray", "mlflow", "optuna", "gymnasium", "dm_control", "mujoco", "shimmy", "sqlalchemy")
SITECUSTOMIZE = blocking_sitecustomize(ABSENT_ON_THE_GPU_MACHINE)


def test_every_part_runs_on_cpu_quick_without_the_cluster_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(site)}  # the script itself puts the repository on the path
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out),
                           "--no-budget"], cwd=ROOT, capture_output=True, text=True, timeout=850, env=env)  # < pytest's 900
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert list(results["parts"]) == ["device", "tests", "search", "rl", "memorization", "domainbed"]
    assert {name: part["status"] for name, part in results["parts"].items()} == dict.fromkeys(results["parts"], "ok")
    assert {part["budget_s"] for part in results["parts"].values()} == {None}  # --no-budget: no part can be cut
    parts = {name: part["result"] for name, part in results["parts"].items()}
    assert parts["device"]["peak_fp32_tflops"] > 0 and parts["device"]["name"].startswith("CPU")
    assert parts["tests"]["returncode"] in (0, 5) and "passed" not in parts["tests"]["summary"]  # no CUDA: skipped/deselected
    search = parts["search"]
    assert search["block"] == 2 and search["speedup"] == search["block_run"]["configs_per_hour"] / search["k1"]["configs_per_hour"]
    assert 0 < search["block_run"]["fraction_of_peak"] and search["search_hours_block"] > 0
    # The §5.4.1 search by hand: 340 configurations x 6 shift values p x 3 variants x 4 methods = 24,480 trainings of
    # 501 steps; the block trains K of them per step, so 24,480 x 501 x (seconds per block step) / K / 3600 hours.
    for figures, k, hours in ((search["block_run"], search["block"], search["search_hours_block"]),
                              (search["k1"], 1, search["search_hours_k1"])):
        assert hours == pytest.approx(24_480 * 501 * figures["ms_per_step"] / 1000 / k / 3600, rel=1e-9)
    rl = parts["rl"]
    assert rl["updates_per_s_one_agent"] > 0 and rl["agents_per_gpu"] == 2
    assert rl["study"] == RL_STUDY_BY_HAND and rl["study_updates"] == 278_600_000
    assert rl["study_gpu_hours"] == pytest.approx(278_600_000 / rl["updates_per_s_all_agents"] / 3600, rel=1e-9)
    assert rl["study_gpu_hours_one_agent"] == pytest.approx(278_600_000 / rl["updates_per_s_one_agent"] / 3600, rel=1e-9)
    assert parts["memorization"]["easy_runs"] == 5 and parts["memorization"]["grid_widths"] == [16, 64]
    domainbed = parts["domainbed"]
    assert set(domainbed["cases"]) == {"block (stacked forward)", "block (model by model)", "one at a time", "DomainBed-like loop"}
    assert domainbed["default"] == "block (model by model)" and domainbed["steps"] == 3  # CPU default forward, quick size
    assert domainbed["speedup"] > 0 and "projected DomainBed sweep" in domainbed["projection"]
    by_hand = domainbed_hours_by_hand(domainbed["train_s_per_image"], domainbed["eval_s_per_image"])
    assert domainbed["projected_hours"] == pytest.approx(by_hand, rel=2e-3)  # the batch mean: 100,000 draws vs E[.]
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


# The paper's RL study by hand (thesis §5.4; rl-spurious --preset paper): runs = 2 tasks (finger spin, walker walk) x
# 4 methods (ERM, IRM, V-REx, MM-REx) x 10 seeds = 80; tuning runs = 3 penalized methods x 20 configurations = 60
# (counted in full). Each run: 1,000,000 lock-steps, updates from lock-step 5,001 on (5,000 random steps first) =
# 995,000 updating lock-steps, updates_per_step = 0, i.e. one update per training domain = 2 per lock-step.
# Updates: (80 + 60) x 995,000 x 2 = 278,600,000 (the check once printed 0 GPU-hours: 0 taken as no updates).
RL_STUDY_BY_HAND = {"runs": 80, "tuning_runs": 60, "lock_steps": 1_000_000, "updating_lock_steps": 995_000,
                    "updates_per_lockstep": 2, "updates": 278_600_000}


def test_the_rl_study_projection_counts_one_update_per_training_domain():
    import gpu_check

    assert gpu_check.rl_study_updates() == RL_STUDY_BY_HAND


def domainbed_hours_by_hand(train_s: float, eval_s: float) -> dict[str, float]:
    """DomainBed's sweep (5 algorithms x 20 draws x 3 trials x every test-environment set, 5,001 steps, a checkpoint at
    step 0, every 100 and the last: 51, each evaluating all 70,000 images) at ``train_s`` / ``eval_s`` seconds per
    training / evaluated image, the batch DomainBed's int(2^U(3, 9)) with mean E[2^U] - 1/2 = 504 / (6 ln 2) - 1/2.

    ColoredMNIST: 3 environments; test sets: 3 single + 3 pairs = 6 -> 5 x 20 x 3 x 6 = 1,800 runs, each training on
    (3 x 2 + 3 x 1) / 6 = 1.5 environments. RotatedMNIST: 6 environments; 6 single + 15 pairs = 21 -> 6,300 runs, on
    (6 x 5 + 15 x 4) / 21 = 90 / 21 environments.
    """
    batch = 504 / (6 * math.log(2)) - 0.5
    hours = {}
    for dataset, runs, envs in (("ColoredMNIST", 1_800, 1.5), ("RotatedMNIST", 6_300, 90 / 21)):
        hours[dataset] = runs * (envs * batch * 5_001 * train_s + 51 * 70_000 * eval_s) / 3600
    return hours


def test_the_domainbed_projection_matches_a_hand_computation():
    import domainbed_sweep

    assert domainbed_sweep.mean_batch_size() == pytest.approx(504 / (6 * math.log(2)) - 0.5, rel=2e-3)
    for train_s, eval_s in ((1e-3, 0.0), (0.0, 1e-3), (2e-4, 5e-5)):
        seconds = domainbed_sweep.projection_seconds(train_s, eval_s)
        assert {d: runs for d, (runs, _) in seconds.items()} == {"ColoredMNIST": 1_800, "RotatedMNIST": 6_300}
        assert {d: s / 3600 for d, (_, s) in seconds.items()} == pytest.approx(domainbed_hours_by_hand(train_s, eval_s), rel=2e-3)
