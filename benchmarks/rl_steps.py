"""Environment steps and gradient updates per second of gensweep's SAC vs a plain CleanRL-style SAC loop.

Ours: core.rl.sac.Trainer on two spurious-feature training domains of a
DeepMind Control task stepped in lock-step, with the paper's networks by
default (encoder 512-512-50, critic and actor 2 x ``--hidden`` (1024), latent
dynamics and reward model 200-200, 3-step rollout), the reward-model penalty
of ``--method`` and the REx code's loop (one update per training domain per
lock-step, each drawing a batch from both domains; the critic and actor on
every transition of the sampled 3-step sequences).
Plain: one domain of the same task through gymnasium + shimmy, an actor and
a double-Q critic (2 x ``--hidden``, on raw observations), learned
temperature, target networks: the single-file SAC of CleanRL, written out below.

Equal work per update, counted in the transitions the SAC losses use: ours
samples ``--transitions / (2 domains x 3 steps)`` sequences per training
domain (all of their transitions reach the critic and actor), the plain loop
``--transitions`` transitions. Both loops run in this process, alternately,
after their random warm-up; acting and env stepping are included.

    python benchmarks/rl_steps.py [--task cartpole-swingup] [--updates 60] [--transitions 768] [--hidden 1024]

Ends with ``ratio=<ours / plain loop>``: transitions the losses use per second.
"""
from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("MUJOCO_GL", "disable")

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.rl.envs import EnvConfig, parse_task
from core.rl.sac import SACConfig, Trainer


# --- the plain loop: CleanRL's sac_continuous_action, single domain ------------------------------------------
def mlp(inputs: int, outputs: int, hidden: int = 1024) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class PlainSAC:
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 1024, lr: float = 1e-5, gamma: float = 0.99, tau: float = 0.005):
        self.q1, self.q2 = mlp(obs_dim + act_dim, 1, hidden), mlp(obs_dim + act_dim, 1, hidden)
        self.q1_target, self.q2_target = mlp(obs_dim + act_dim, 1, hidden), mlp(obs_dim + act_dim, 1, hidden)
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        self.actor = mlp(obs_dim, 2 * act_dim, hidden)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.log_alpha = torch.tensor(math.log(0.1), requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=1e-4)
        self.target_entropy, self.gamma, self.tau, self.updates = -float(act_dim), gamma, tau, 0

    def policy(self, obs):
        mean, log_std = self.actor(obs).chunk(2, dim=-1)
        log_std = -5 + 0.5 * 7 * (torch.tanh(log_std) + 1)
        normal = torch.distributions.Normal(mean, log_std.exp())
        u = normal.rsample()
        action = torch.tanh(u)
        log_prob = (normal.log_prob(u) - torch.log(1 - action.pow(2) + 1e-6)).sum(-1, keepdim=True)
        return action, log_prob

    def update(self, obs, action, reward, next_obs, done) -> None:
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = self.policy(next_obs)
            q_next = torch.min(self.q1_target(torch.cat([next_obs, next_action], 1)), self.q2_target(torch.cat([next_obs, next_action], 1)))
            target = reward + (1 - done) * self.gamma * (q_next - alpha * next_log_prob)
        sa = torch.cat([obs, action], 1)
        q_loss = F.mse_loss(self.q1(sa), target) + F.mse_loss(self.q2(sa), target)
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        new_action, log_prob = self.policy(obs)
        sa_new = torch.cat([obs, new_action], 1)
        actor_loss = (alpha * log_prob - torch.min(self.q1(sa_new), self.q2(sa_new))).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = (-self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        self.updates += 1
        if self.updates % 2 == 0:
            with torch.no_grad():
                for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                    for p, tp in zip(net.parameters(), target_net.parameters()):
                        tp.lerp_(p, self.tau)


def plain_env(task: str) -> gym.Env:
    import shimmy  # noqa: F401  (registers the dm_control/ ids)

    domain, name = parse_task(task)
    return gym.wrappers.FlattenObservation(gym.make(f"dm_control/{domain}-{name}-v0"))


def run_plain(task: str, warmup: int, updates: int, batch: int, hidden: int, seed: int = 0) -> tuple[float, float]:
    """(env steps / s of the random warm-up, update steps / s after it, acting and stepping included)."""
    torch.manual_seed(seed)
    env = plain_env(task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = PlainSAC(obs_dim, act_dim, hidden)
    rng = np.random.default_rng(seed)
    size = warmup + updates
    buf = {k: np.zeros((size, d), np.float32) for k, d in (("obs", obs_dim), ("action", act_dim), ("reward", 1), ("next_obs", obs_dim), ("done", 1))}
    obs, _ = env.reset(seed=seed)
    start, t_updates = time.perf_counter(), None
    for step in range(size):
        if step == warmup:
            t_warm = time.perf_counter() - start
            t_updates = time.perf_counter()
        if step < warmup:
            action = rng.uniform(-1, 1, act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                action = agent.policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0][0].numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in (("obs", obs), ("action", action), ("reward", reward), ("next_obs", next_obs), ("done", terminated)):
            buf[key][step] = value
        obs = env.reset()[0] if terminated or truncated else next_obs
        if step >= warmup:
            rows = rng.integers(0, step + 1, size=batch)
            agent.update(*(torch.as_tensor(buf[k][rows]) for k in ("obs", "action", "reward", "next_obs", "done")))
    return warmup / t_warm, updates / (time.perf_counter() - t_updates)


def run_ours(task: str, warmup: int, updates: int, sequences: int, method: str, hidden: int, seed: int = 0) -> tuple[float, float]:
    """(env steps / s of the random warm-up over both domains, update steps / s after it)."""
    config = SACConfig(method=method, random_steps=warmup, batch_size=sequences, seed=seed, penalty_weight=10.0, anneal_iters=0,
                       hidden=hidden)
    trainer = Trainer(config, EnvConfig(task=task), eval_episodes=1)
    trainer._evaluate = lambda on_eval: None  # run() evaluates at its end: not timed here
    start = time.perf_counter()
    trainer.run(warmup, eval_every=10**9)
    t_warm = time.perf_counter() - start
    steps = -(-updates // trainer.updates_per_step)  # lock-steps: updates_per_step (2) updates each
    start = time.perf_counter()
    trainer.run(warmup + steps, eval_every=10**9)
    return len(trainer.envs) * warmup / t_warm, steps * trainer.updates_per_step / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--warmup", type=int, default=1000, help="random steps before the updates (per domain)")
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--transitions", type=int, default=768,
                        help="transitions the losses use per update (ours: / 6 sequences per training domain; REx code: 2 x 3 x 256 = 1536)")
    parser.add_argument("--hidden", type=int, default=1024, help="actor and critic width (the paper's 1024)")
    parser.add_argument("--method", default="vrex")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sequences = max(1, args.transitions // (2 * SACConfig().seq_len))
    used = 2 * SACConfig().seq_len * sequences
    print(f"task {args.task}, hidden {args.hidden}, {used} transitions per update (ours {sequences} sequences x 3 steps x 2 "
          f"domains), {args.updates} updates after {args.warmup} random steps, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(run_ours(args.task, args.warmup, args.updates, sequences, args.method, args.hidden))
        plain.append(run_plain(args.task, args.warmup, args.updates, used, args.hidden))
    o_env, o_upd = max(r[0] for r in ours), max(r[1] for r in ours)
    p_env, p_upd = max(r[0] for r in plain), max(r[1] for r in plain)
    print(f"ours  ({args.method}, 2 training domains): {o_env:8.0f} env steps/s (random phase, both domains), "
          f"{o_upd:6.2f} updates/s = {o_upd * used:7.0f} transitions/s")
    print(f"plain (CleanRL-style SAC, 1 domain):   {p_env:8.0f} env steps/s (random phase),              "
          f"{p_upd:6.2f} updates/s = {p_upd * used:7.0f} transitions/s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print(f"ratio={o_upd / p_upd:.3f}")


if __name__ == "__main__":
    main()
