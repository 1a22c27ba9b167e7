"""Trainable for the RL study: one (task, method, seed) of SAC with a penalized reward model -> Reports, checkpoints.

Config keys (JSON scalars, lists for factors): ``task`` (e.g. cartpole-swingup),
``method`` (a core.methods name), ``seed``, ``total_steps`` (lock-steps, i.e.
env steps per training domain), ``eval_every``, ``eval_episodes``, and any
:class:`core.rl.sac.SACConfig` field (``penalty_weight``, ``anneal_iters``,
``random_steps``, ``batch_size``, ...) or :class:`core.rl.envs.EnvConfig`
field (``train_factors``, ``test_factor``, ``k``, ``noise``, ``hide`` as a
comma-separated string, ``episode_steps``; 0 = the task's default).

Every evaluation reports the training-domain and test-domain returns and the
mean update losses since the last one, with a ``tune.Checkpoint`` of the
whole trainer state (networks, optimizers, replay buffers, RNGs, env physics);
a trial restarted by Tune (dead worker, preemption) continues from the last
one and ends with the same evaluations as an uninterrupted run.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import fields
from typing import Any, Callable, Mapping

from core.rl.envs import EnvConfig
from core.rl.layouts import parse_hide
from core.rl.sac import SACConfig, Trainer, load_state, save_state
from tasks.report import Report, tune_reporter

STATE_FILE = "trainer.pt"


def sac_config(config: Mapping[str, Any]) -> SACConfig:
    """The SACConfig fields a config sets (defaults for the rest); ``device`` is always auto."""
    names = {f.name for f in fields(SACConfig)} - {"device"}
    return SACConfig(**{k: type(getattr(SACConfig(), k))(v) for k, v in config.items() if k in names})


def env_config(config: Mapping[str, Any]) -> EnvConfig:
    """The domains a config names."""
    hide = parse_hide(config.get("hide", ""))
    return EnvConfig(
        task=str(config["task"]), train_factors=tuple(float(f) for f in config.get("train_factors", (1.0, 2.0))),
        test_factor=float(config.get("test_factor", 3.0)), k=int(config.get("k", 1)), noise=float(config.get("noise", 0.01)),
        hide=hide, episode_steps=int(config.get("episode_steps", 0)) or None,
    )


def eval_metrics(step: int, train_return: float, test_return: float, losses: Mapping[str, float]) -> dict[str, float]:
    """The flat metrics of one evaluation."""
    return {"step": step, "train_return": float(train_return), "test_return": float(test_return),
            **{f"loss_{name}": float(value) for name, value in losses.items()}}


def run_rl(config: Mapping[str, Any], report: Callable[[Report, Trainer], None], state: Mapping[str, Any] | None = None) -> list[dict]:
    """Train one run (from ``state`` when resuming); ``report(Report, trainer)`` at every evaluation; the evaluations."""
    total, every = int(config["total_steps"]), int(config["eval_every"])
    trainer = Trainer(sac_config(config), env_config(config), eval_episodes=int(config.get("eval_episodes", 10)), state=state)

    def on_eval(step: int, train_return: float, test_return: float, losses: dict) -> None:
        report(Report(step=step, final=step >= total, metrics=[eval_metrics(step, train_return, test_return, losses)]), trainer)

    return trainer.run(total, every, on_eval)


def rl_trainable(config: dict, data=None) -> None:
    """Ray Tune function trainable: resumes from the trial's last checkpoint when Tune restarts it."""
    from ray import tune

    import ray
    import torch

    # One torch thread per CPU Ray gave the trial: two 1-CPU trials on 2 cores do not oversubscribe them.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    checkpoint = tune.get_checkpoint()
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(os.path.join(directory, STATE_FILE))
    send = tune_reporter()

    def report(r: Report, trainer: Trainer) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_state(trainer.state_dict(), os.path.join(directory, STATE_FILE))
            send(r, checkpoint=tune.Checkpoint.from_directory(directory))

    run_rl(config, report, state)
