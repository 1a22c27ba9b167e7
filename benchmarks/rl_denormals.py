"""Update speed of gensweep's SAC with denormal floats kept vs flushed to zero, from one trained state, one process.

The RL study's update slowed ~4x after some thousand updates on a CPU: Adam's
first moment of a weight whose gradient stays zero (a dead ReLU unit) shrinks
by beta1 = 0.9 an update and becomes denormal (< 1.2e-38) within ~800
updates, and CPU arithmetic on denormals is slow. ``Trainer.run`` therefore
turns on ``torch.set_flush_denormal`` on a CPU. This benchmark shows why:

1. trains the ``study`` preset's agent (cartpole swingup, two spurious
   training domains, V-REx reward model, CPU networks 2 x 256, batch 64
   sequences per domain, two updates per lock-step) for ``--steps`` lock-steps
   after ``--random`` random ones, with denormals kept (as before the fix);
2. counts the denormal entries of the optimizers' states and the weights;
3. from that one state (a fresh trainer rebuilt from it each time), times
   ``--measure`` lock-steps with denormals kept, then flushed, ``--repeats``
   times, alternately.

    python benchmarks/rl_denormals.py [--steps 1500] [--random 1000] [--measure 20] [--repeats 2]
    python benchmarks/rl_denormals.py --state RESULTS/tune/<sweep>-runs/<trial>/checkpoint_000001/trainer.pt

``--state`` starts from a trial's checkpoint instead (its config and domains;
steps 1-2 skipped): the figure in ``Trainer.run``'s docstring is a study
trial's state at step 10,000, saved before the fix.

Ends with ``ratio=<lock-steps/s flushed / kept>`` (median over the repeats).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "disable")

import torch

from core.rl.envs import EnvConfig
from core.rl.sac import SACConfig, Trainer, load_state

TINY = 1.1754944e-38  # the smallest normal float32


def denormals(trainer: Trainer) -> tuple[int, int]:
    """(denormal entries, all entries) of every optimizer state tensor and every weight."""
    agent, bad, total = trainer.agent, 0, 0
    tensors = [p for net in agent.nets.values() for p in net.parameters()]
    for opt in (agent.critic_opt, agent.actor_opt, agent.alpha_opt, agent.model_opt):
        tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v) and v.dim() > 0]
    for t in tensors:
        a = t.detach().abs()
        bad += int(((a > 0) & (a < TINY)).sum())
        total += a.numel()
    return bad, total


def lockstep_rate(trainer: Trainer, steps: int, flush: bool) -> float:
    torch.set_flush_denormal(flush)
    start = time.perf_counter()
    for _ in range(steps):
        trainer._lockstep()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="lock-steps trained (denormals kept) before timing")
    parser.add_argument("--random", type=int, default=1000, help="random warm-up lock-steps")
    parser.add_argument("--measure", type=int, default=20, help="lock-steps timed per measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a Ray trial of one CPU: 1)")
    parser.add_argument("--state", help="a trainer checkpoint (trainer.pt) to time instead of training one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.state:
        state = load_state(args.state)
        config, env = SACConfig.from_dict(state["config"]), EnvConfig.from_dict(state["env_config"])
        trainer = Trainer(config, env, eval_episodes=1, state=state)
        print(f"{args.state}: {config.method}, step {state['step']}, load average {os.getloadavg()[0]:.2f}")
    else:
        trainer, state = train(args)
        config, env = trainer.config, trainer.env_config
    bad, total = denormals(trainer)
    print(f"denormal entries in the weights and optimizer states: {bad:,} of {total:,} ({100 * bad / total:.2f} %)")
    ratios = []
    for repeat in range(args.repeats):
        kept = lockstep_rate(Trainer(config, env, eval_episodes=1, state=state), args.measure, flush=False)
        flushed = lockstep_rate(Trainer(config, env, eval_episodes=1, state=state), args.measure, flush=True)
        ratios.append(flushed / kept)
        print(f"repeat {repeat + 1}: kept {kept:6.2f} lock-steps/s, flushed {flushed:6.2f} lock-steps/s, ratio {ratios[-1]:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print(f"ratio={statistics.median(ratios):.2f}")


def train(args) -> tuple[Trainer, dict]:
    """The study preset's V-REx seed-0 run (its settings, ``--random`` warm-up steps) trained with denormals kept."""
    from pipelines.engine.spec import resolve_settings
    from pipelines.rex.rl_spurious import PIPELINE
    from tasks.rl import env_config, sac_config

    (stage,) = PIPELINE.stages(resolve_settings(PIPELINE, "study", [f"random_steps={args.random}"]))
    run = next(c for c in stage.plan.configs if c["method"] == "vrex" and c["seed"] == 0)
    config, env = sac_config(run), env_config(run)
    print(f"study preset's agent, {args.random} random + {args.steps} trained lock-steps (2 updates each), "
          f"torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
    trainer = Trainer(config, env, eval_episodes=1)
    trainer.obs = [e.reset()[0] for e in trainer.envs]
    start = time.perf_counter()
    torch.set_flush_denormal(False)
    for _ in range(args.random + args.steps):
        trainer._lockstep()
    print(f"trained in {time.perf_counter() - start:.0f} s")
    return trainer, trainer.state_dict()


if __name__ == "__main__":
    main()
