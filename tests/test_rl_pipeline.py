"""The RL study's pipeline (rl-spurious) and trainable (tasks.rl): stages, settings, and a killed trial that resumes.

The resume test kills the trial's worker process (``os._exit``) right after its
second evaluation and checkpoint; Tune restarts it from that checkpoint and
the sweep ends with exactly the evaluations of an uninterrupted run, with
identical returns (the checkpoint holds networks, optimizers, replay buffers,
RNG and environment state).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")

from core import methods
from pipelines.rex import rl_spurious
from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import GensweepError, Grid, NoData, Pipeline, Setting, Stage, resolve_settings
from pipelines.engine.store import ResultStore
from tasks import rl

PIPELINE = rl_spurious.PIPELINE


def test_smoke_stages_train_every_method_once_on_cartpole():
    settings = resolve_settings(PIPELINE, "smoke", [])
    (stage,) = PIPELINE.stages(settings)
    assert stage.name == "runs" and stage.metric == "test_return"
    configs = stage.plan.configs
    assert [(c["task"], c["method"], c["seed"]) for c in configs] == [
        ("cartpole-swingup", m, 0) for m in ("erm", "irm", "vrex", "mmrex")
    ]
    assert {c["total_steps"] for c in configs} == {1500} and {c["train_factors"] == [1.0, 2.0] for c in configs} == {True}


def test_paper_stages_tune_on_cartpole_then_ten_seeds_of_two_tasks():
    settings = resolve_settings(PIPELINE, "paper", [])
    tune_stage, runs = PIPELINE.stages(settings)
    assert tune_stage.name == "tune" and tune_stage.scheduler is not None and tune_stage.mode == "max"
    assert [s["method"] for s in tune_stage.plan.studies] == [m for m in rl_spurious.METHODS if methods.get(m).penalized]
    assert {s["task"] for s in tune_stage.plan.studies} == {"cartpole-swingup"} and tune_stage.plan.budget == 20
    assert runs.followup  # built from the tune stage's rows
    import pandas as pd

    tune_rows = pd.DataFrame([dict(trial_key=k, method=m, penalty_weight=w, anneal_iters=a, train_return=r, stopped_early=e)
                              for k, m, w, a, r, e in [("a", "irm", 10.0, 100, 5.0, False), ("b", "irm", 20.0, 200, 9.0, True),
                                                       ("c", "irm", 30.0, 300, 7.0, False), ("d", "vrex", 40.0, 400, 1.0, False)]])
    configs = runs.plan({"tune": tune_rows}).configs
    assert len(configs) == 2 * 4 * 10
    assert {(c["total_steps"], c["eval_every"], c["eval_episodes"], c["episode_steps"], c["batch_size"]) for c in configs} == {
        (1_000_000, 10_000, 10, 1000, 256)
    }
    chosen = {(c["method"], c["penalty_weight"], c["anneal_iters"], c["hparams_from"]) for c in configs}
    assert chosen == {("irm", 30.0, 300, "tune:c"), ("vrex", 40.0, 400, "tune:d"),  # best among runs ASHA did not stop
                      ("erm", settings["penalty_weight"], settings["anneal_iters"], "settings"),
                      ("mmrex", settings["penalty_weight"], settings["anneal_iters"], "settings")}  # no tune rows: settings


@pytest.mark.parametrize("bad, message", [("total_steps=0", "total_steps"), ("tasks=pong", "tasks"), ("methods=grayscale", "methods")])
def test_bad_settings_fail_before_ray_starts(bad, message):
    with pytest.raises(GensweepError, match=message):
        resolve_settings(PIPELINE, "smoke", [bad])


@pytest.mark.parametrize("bad, message", [
    (["hide=nosuchkey"], "cartpole-swingup: cannot hide 'nosuchkey'"),
    (["hide=velocity[2]"], "cannot hide 'velocity\\[2\\]'"),  # cartpole's velocity has 2 entries
    (["k=999"], "k must be in 0..5"),
    (["k=6"], "k must be in 0..5"),
    (["hide=position,velocity"], "hides every state entry"),
    (["train_factors=1"], "irm, vrex, mmrex penalize .* at least 2"),
    (["methods=mmrex", "train_factors=1"], "mmrex penalize"),
    (["stages=tune,runs", "tasks=walker-walk", "tune_task=cartpole-swingup", "hide=orientations"], "cartpole-swingup: cannot hide"),
])
def test_bad_rl_settings_end_the_command_in_one_line_before_ray(bad, message, tmp_path, capsys, monkeypatch):
    import ray

    from pipelines import cli
    from pipelines.engine import runner

    def started(sweep):  # a check that lets the settings through must fail here, not train for minutes
        raise AssertionError("the sweep started")

    monkeypatch.setattr(runner, "run_sweep", started)
    argv = ["run", "rl-spurious", "--results", str(tmp_path / "results")] + [a for item in bad for a in ("--set", item)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gensweep: error: ")
    import re

    assert re.search(message, err), err
    assert not ray.is_initialized() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("good", [["methods=erm", "train_factors=1"], ["hide=velocity[1]"], ["k=0", "hide=velocity"],
                                  ["k=5"], ["tasks=walker-walk", "hide=orientations,height"]])
def test_good_rl_settings_pass_the_check(good):
    PIPELINE.check(resolve_settings(PIPELINE, "smoke", good))


def test_learn_preset_is_plain_sac_on_cartpole_swingup_and_says_it_runs_small_networks():
    settings = resolve_settings(PIPELINE, "learn", [])
    (stage,) = PIPELINE.stages(settings)
    configs = stage.plan.configs
    assert [(c["task"], c["method"], c["seed"]) for c in configs] == [("cartpole-swingup", "erm", 0), ("cartpole-swingup", "erm", 1)]
    sac, env = rl.sac_config(configs[0]), rl.env_config(configs[0])
    assert env.k == 0 and env.train_factors == (1.0,) and env.episode_steps == 1000
    assert (sac.hidden, sac.encoder_hidden, sac.batch_size, sac.actor_lr, sac.critic_lr) == (256, 256, 256, 3e-4, 3e-4)
    assert (configs[0]["total_steps"], sac.random_steps, configs[0]["eval_episodes"]) == (60_000, 5000, 10)
    # The probe: the reward model frozen, no encoder L1, the first transition of each sequence.
    assert (sac.model_lr, sac.encoder_l1, sac.critic_seq) == (0.0, 0.0, 1)
    assert (sac.updates_per_step, sac.seeding, sac.buffer_capacity) == (0, "shared", 1_000_000)
    help_text = PIPELINE.preset_help["learn"]
    assert all(s in help_text for s in ("2 x 256", "2 x 1024", "reward model frozen", "no encoder L1"))


def test_study_preset_trains_the_reward_model_as_the_reference():
    (stage,) = PIPELINE.stages(resolve_settings(PIPELINE, "study", []))
    sac = rl.sac_config(stage.plan.configs[0])
    assert (sac.model_lr, sac.encoder_l1, sac.critic_seq, sac.updates_per_step) == (1e-4, 1e-5, 3, 0)


def test_paper_preset_runs_the_reference_penalty_and_loop():
    """run_cluster.sh: PENALTY in 1, ANNEAL_ITERS in 20000; the trainer gets the REx code's loop and buffers."""
    settings = resolve_settings(PIPELINE, "paper", ["stages=runs"])
    configs = PIPELINE.stages(settings)[0].plan.configs
    assert {(c["penalty_weight"], c["anneal_iters"]) for c in configs} == {(1.0, 20_000)}
    sac = rl.sac_config(configs[0])
    assert (sac.penalty_weight, sac.anneal_iters, sac.critic_seq, sac.updates_per_step) == (1.0, 20_000, 3, 0)
    assert (sac.buffer_capacity, sac.seeding, sac.batch_size, sac.hidden, sac.actor_lr) == (1_000_000, "shared", 256, 1024, 1e-5)


def test_report_names_the_rl_rex_mm_rex_and_v_rex_our_extension(tmp_path):
    import pandas as pd

    rows = pd.DataFrame([dict(stage="runs", trial_key=f"{m}{s}", task="cartpole-swingup", method=m, seed=s, train_return=10.0 + s,
                              test_return=5.0, penalty_weight=1.0, anneal_iters=20_000, hparams_from="settings", k=1,
                              train_factors="[1.0, 2.0]", test_factor=3.0, hidden=256)
                         for m in ("erm", "mmrex", "vrex") for s in (0, 1)])
    curves = pd.DataFrame([dict(trial_key=k, step=st, train_return=1.0, test_return=0.5) for k in rows["trial_key"] for st in (20_000, 40_000)])
    text = rl_spurious.report(rows, curves, str(tmp_path))
    assert "| cartpole-swingup | MM-REx (the paper's RL REx, penalty abs(R1 - R2)) | 10.5 ± 0.5 |" in text
    assert "| cartpole-swingup | V-REx (our extension; not in the REx RL code) | 10.5 ± 0.5 |" in text
    assert "| cartpole-swingup | ERM | 10.5 ± 0.5 | 5.0 ± 0.0 | 5.5 ± 0.5 | 2 |" in text
    assert "hidden=256 (paper 1024)" in text
    assert "| 20000 | 1.0 | 0.5 | 206.0 |" in text  # the pytorch_sac anchor next to the first method
    assert (tmp_path / "curves_cartpole-swingup.png").exists()


def test_config_maps_to_sac_and_env_configs():
    config = dict(task="walker-walk", method="vrex", seed=3, penalty_weight=10.0, anneal_iters=7, batch_size=32,
                  hide="velocity, height", episode_steps=0, train_factors=[1, 2], test_factor=3)
    sac, env = rl.sac_config(config), rl.env_config(config)
    assert (sac.method, sac.seed, sac.penalty_weight, sac.anneal_iters, sac.batch_size) == ("vrex", 3, 10.0, 7, 32)
    assert isinstance(sac.anneal_iters, int) and sac.device == "auto"
    assert env.hide == ("velocity", "height") and env.episode_steps is None and env.train_factors == (1.0, 2.0)


# --- a trial killed mid-run resumes from its checkpoint -----------------------------------------------------

SMALL = dict(hidden=32, encoder_hidden=32, feature_dim=8, model_hidden=16, batch_size=16, buffer_capacity=2000,
             actor_lr=1e-3, critic_lr=1e-3, model_lr=1e-3)
TOTAL, EVERY = 120, 40


def dying_rl_trainable(config: dict, data=None) -> None:
    """tasks.rl.rl_trainable, whose worker process dies right after its 2nd checkpointed report, once."""
    marker = Path(config["marker"])
    real_reporter = rl.tune_reporter

    def reporter():
        send = real_reporter()

        def report(r, checkpoint=None):
            send(r, checkpoint=checkpoint)
            if r.step == 2 * EVERY and not marker.exists():
                marker.write_text("killed")
                os._exit(1)

        return report

    rl.tune_reporter = reporter
    rl.rl_trainable(config, data)


def _pipeline(name: str, trainable) -> Pipeline:
    def stages(settings):
        config = dict(task="point-reach", method="vrex", seed=1, total_steps=TOTAL, eval_every=EVERY, eval_episodes=2,
                      random_steps=40, penalty_weight=5.0, anneal_iters=60, marker=settings["marker"], **SMALL)
        return [Stage("runs", trainable, Grid([config]), metric="test_return", mode="max", label=lambda c: c["method"])]

    return Pipeline(name=name, description="one tiny SAC run", settings={"marker": Setting("", "kill marker file")},
                    presets={"smoke": {}}, load_data=lambda s, d: NoData("none"), stages=stages,
                    report=lambda t, c, o: "", run_defaults={"gpus_per_trial": 0.0, "max_failures": 2})


def _curve(results: str, name: str) -> tuple[list, list]:
    store = ResultStore.open(results)
    rows, curves = store.read("trials", name), store.read("curves", name)
    assert len(rows) == 1
    curve = curves.sort_values("step")
    return curve["step"].tolist(), curve[["train_return", "test_return"]].values.tolist()


@pytest.mark.e2e
def test_killed_trial_resumes_from_its_checkpoint_with_the_same_evaluations(ray_session, tmp_path):
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    clean = _pipeline("rl-clean", rl.rl_trainable)
    killed = _pipeline("rl-killed", dying_rl_trainable)
    results = str(tmp_path / "results")

    summary = run_sweep(Sweep(killed, "smoke", resolve_settings(killed, "smoke", [f"marker={marker}"]), results, quiet=True))
    assert marker.exists(), "the worker was never killed"
    assert summary.complete and summary.failed == 0
    baseline = run_sweep(Sweep(clean, "smoke", resolve_settings(clean, "smoke", [f"marker={tmp_path / 'unused'}"]), results, quiet=True))
    assert baseline.complete

    steps, returns = _curve(results, "rl-killed")
    clean_steps, clean_returns = _curve(results, "rl-clean")
    assert steps == clean_steps == [EVERY, 2 * EVERY, 3 * EVERY]
    flat = lambda pairs: [value for pair in pairs for value in pair]
    assert flat(returns) == pytest.approx(flat(clean_returns), abs=1e-6)  # resumed exactly where it stopped


def test_tuned_values_fall_back_to_all_rows_per_method_when_asha_stopped_every_one_of_them():
    """One ASHA serves every method: when it stopped all of vrex's configurations but not irm's, vrex's best is its
    best stopped one (the CI flake of stop 38: vrex's runs trained at the settings' values instead)."""
    import pandas as pd

    rows = pd.DataFrame({
        "method": ["irm", "irm", "vrex", "vrex"], "trial_key": ["a", "b", "c", "d"],
        "penalty_weight": [1.0, 2.0, 3.0, 4.0], "anneal_iters": [10, 20, 30, 40],
        "train_return": [-17.0, -35.0, -35.5, -7.0], "stopped_early": [False, True, True, True],
    })
    tuned = rl_spurious.tuned_values(rows)
    assert tuned["irm"] == {"penalty_weight": 1.0, "anneal_iters": 10, "hparams_from": "tune:a"}  # finished beats stopped
    assert tuned["vrex"] == {"penalty_weight": 4.0, "anneal_iters": 40, "hparams_from": "tune:d"}
    assert rl_spurious.tuned_values(rows.iloc[:0]) == {}


@pytest.mark.e2e
def test_runs_stage_trains_each_method_with_its_tuned_values(ray_session, tmp_path):
    """stages=tune,runs on the toy task, 2 tune configurations per penalized method: the runs get the best of them."""
    tiny = ["stages=tune,runs", "tasks=point-reach", "tune_task=point-reach", "methods=erm,irm,vrex", "tune_samples=2",
            "total_steps=40", "eval_every=20", "random_steps=10", "batch_size=8", "episode_steps=0", "eval_episodes=1",
            "hidden=16", "encoder_hidden=16", "penalty_weight=3.0", "anneal_iters=5"]
    settings = resolve_settings(PIPELINE, "smoke", tiny)
    results = str(tmp_path / "results")
    summary = run_sweep(Sweep(PIPELINE, "smoke", settings, results, quiet=True))
    assert summary.complete and summary.total == 2 * 2 + 3
    rows = ResultStore.open(results).read("trials", "rl-spurious")
    tune, runs = rows[rows["stage"] == "tune"], rows[rows["stage"] == "runs"]
    for method in ("irm", "vrex"):
        mine = tune[tune["method"] == method]
        assert len(mine) == 2 and len(set(mine["penalty_weight"])) == 2  # two draws, so the choice shows
        finished = mine[~mine["stopped_early"].astype(bool)]  # one ASHA for the stage: both may be stopped (then all count)
        best = (finished if len(finished) else mine).sort_values(["train_return", "trial_key"], ascending=[False, True]).iloc[0]
        (run,) = runs[runs["method"] == method].to_dict("records")
        assert (run["penalty_weight"], run["anneal_iters"]) == (best["penalty_weight"], best["anneal_iters"])
        assert run["hparams_from"] == f"tune:{best['trial_key']}" and run["penalty_weight"] != 3.0
    (erm,) = runs[runs["method"] == "erm"].to_dict("records")  # not tuned: the settings' values
    assert (erm["penalty_weight"], erm["anneal_iters"], erm["hparams_from"]) == (3.0, 5, "settings")
    text = PIPELINE.report(rows, ResultStore.open(results).read("curves", "rl-spurious"), str(tmp_path))
    irm = runs[runs["method"] == "irm"].iloc[0]
    assert f"| IRM | {irm['penalty_weight']:.4g} | {irm['anneal_iters']} | tuned (tune row {irm['hparams_from'][5:]}) |" in text
    assert "| ERM | 3 | 5 | the settings |" in text


def test_study_preset_runs_every_method_with_the_spurious_feature_seed_major():
    settings = resolve_settings(PIPELINE, "study", [])
    configs = PIPELINE.stages(settings)[0].plan.configs
    # Seed-major: the first trials Ray starts together are one of each method, so a stopped sweep still compares them.
    assert [(c["method"], c["seed"]) for c in configs] == [(m, s) for s in (0, 1) for m in rl_spurious.METHODS]
    env = rl.env_config(configs[0])
    assert (env.k, env.train_factors, env.test_factor) == (1, (1.0, 2.0), 3.0)
    assert {(c["batch_size"], c["hidden"], c["total_steps"]) for c in configs} == {(64, 256, 20_000)}
