"""SAC with a shared state encoder and a latent reward model penalized across training domains (thesis §5.4).

One CleanRL-style file, following the REx authors' released code
(``reinforcement_learning_with_spurious_correlations``, a pytorch_sac fork;
hyperparameters in ``docs/experiments.md``):

- encoder ``obs -> 512 -> 512 -> 50`` (ReLU on every layer, the output
  included), shared by the critic and the reward model; the actor sees its
  output detached; ``encoder_l1`` (1e-5) x the L1 norm of its weights is added
  to the critic loss;
- double-Q critic and tanh-Gaussian actor, 2 x 1024 hidden each (orthogonal
  init), log-std squashed into [-5, 2]; learned temperature (init 0.1, target
  entropy -|A|); target encoder + critic, Polyak tau 0.005 every 2 updates;
- latent dynamics ``[z, a] -> 200 -> 200 -> 50`` and reward head
  ``50 -> 200 -> 200 -> 1``: from ``z_0 = encoder(s_0)``, ``z_{t+1} =
  dynamics(z_t, a_t)`` predicts ``r_t`` along ``seq_len`` (3) stored steps
  (DeepMDP-style). The per-training-domain squared reward errors are the
  domain risks of :func:`core.methods.objective` (ERM / IRM / V-REx / MM-REx /
  RI, with its anneal-and-rescale rule; the IRM penalty per domain is
  :func:`core.objectives.irm_penalty_mse`, averaged over domains as in the RL
  code, and the risks are averaged too: ``reduction="mean"``, the RL code's
  ``torch.stack(decoder_loss).mean()``). That loss trains the dynamics, the
  reward head and the encoder (Adam, lr 1e-4, weight decay 1e-5), so the
  penalty shapes the representation the critic uses. ``model_lr=0`` freezes
  the reward model (it is not stepped; its losses are still reported), and
  with ``encoder_l1=0`` that is plain SAC with a deeper critic trunk.

One update (:meth:`Agent.update`) takes a batch of ``batch_size`` (256)
sequences from *each* training domain's replay buffer and, in order, steps
the reward model, the critic (on the first ``critic_seq`` transitions of
each sequence; mean over domains), the actor and temperature (on the encoder
output of the critic step, detached), then the targets. Each loss is
computed fresh and stepped in turn (the released code builds all losses from
the same parameters and steps them one after the other, which newer PyTorch
refuses as an in-place modification). Every default of :class:`SACConfig`
but ``method`` is the reference code's (:data:`core.rl.hparams.AGENT`): one
``update`` per domain env step (``updates_per_step=0``) and all 3 x 256
transitions of the sequences in the critic batch (``critic_seq=3``).

Training (:class:`Trainer`): the training domains are stepped in lock-step
(one env step in each per trainer step), uniform random actions for the first
``random_steps`` (5000) steps, then policy samples and ``updates_per_step``
updates per step; evaluation (deterministic mean action, ``eval_episodes``
(10) episodes) on a training-domain env (factor ``train_factors[0]``) and on
the test domain, at every multiple of ``eval_every`` and at ``total_steps``.
"step" counts trainer (lock-)steps, i.e. env steps per domain; the anneal
step of the penalty is compared with it.

Checkpointing: :meth:`Trainer.state_dict` holds everything (networks,
optimizers, temperature, the agent's sampling generator, the replay buffers'
filled part, the trainer's numpy RNG, every env's exact physics / RNG state
and episode progress, the evaluations so far), so a trainer rebuilt from it
continues bit-for-bit on the same device, mid-episode included. The buffers
dominate its size: about ``4 * (2 * obs + act + 4)`` bytes per stored
transition and domain (walker: ~250 B, so ~0.5 GB at 1e6 steps x 2 domains).
Save it with :func:`save_state` (``torch.save``; it holds numpy arrays, so
:func:`load_state` loads with ``weights_only=False``: own checkpoints only)::

    trainer = Trainer(SACConfig(method="mmrex"), EnvConfig("walker-walk"), state=load_state(path) if resuming else None)
    def on_eval(step, train_return, test_return, losses):
        save_state(trainer.state_dict(), path)      # the state after this evaluation
        report(step, train_return, test_return, losses)
    trainer.run(total_steps=1_000_000, eval_every=10_000, on_eval=on_eval)

No Ray, MLflow or Optuna here; CUDA when present (``device="auto"``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core import methods
from core.device import resolve_device
from core.objectives import irm_penalty_mse
from core.rl.hparams import AGENT
from core.rl.seeding import derive_seed

if TYPE_CHECKING:  # the envs need gymnasium and dm_control; the agent and its buffer do not
    from core.rl.envs import EnvConfig

STATE_VERSION = 1
SEEDINGS = ("shared", "per_domain")


@dataclass
class SACConfig:
    """All hyperparameters of one run; JSON-serializable (:meth:`to_dict`)."""

    # Defaults: the REx RL code's values (core.rl.hparams.AGENT), but the method.
    method: str = "erm"  # the reward-model objective (core.methods registry)
    penalty_weight: float = AGENT["penalty_weight"]
    anneal_iters: int = AGENT["anneal_iters"]
    reduction: str = AGENT["reduction"]  # "sum" / "method" as in core.methods
    irm_reduction: str = AGENT["irm_reduction"]
    # SAC.
    gamma: float = AGENT["gamma"]
    init_temperature: float = AGENT["init_temperature"]
    actor_lr: float = AGENT["actor_lr"]
    critic_lr: float = AGENT["critic_lr"]
    alpha_lr: float = AGENT["alpha_lr"]
    tau: float = AGENT["tau"]
    target_update_every: int = AGENT["target_update_every"]
    actor_update_every: int = AGENT["actor_update_every"]
    log_std_min: float = AGENT["log_std_min"]
    log_std_max: float = AGENT["log_std_max"]
    hidden: int = AGENT["hidden"]  # actor and critic: 2 hidden layers of this width
    # Encoder and latent reward model.
    encoder_hidden: int = AGENT["encoder_hidden"]
    feature_dim: int = AGENT["feature_dim"]
    encoder_l1: float = AGENT["encoder_l1"]
    model_hidden: int = AGENT["model_hidden"]
    model_lr: float = AGENT["model_lr"]  # 0: the reward model is frozen (not stepped): plain SAC on the encoder (the learn preset)
    model_weight_decay: float = AGENT["model_weight_decay"]
    seq_len: int = AGENT["seq_len"]
    # Data.
    batch_size: int = AGENT["batch_size"]  # sequences per training domain and update
    critic_seq: int = AGENT["critic_seq"]  # transitions of each sequence in the critic / actor batch
    updates_per_step: int = AGENT["updates_per_step"]  # per lock-step; 0: one per training domain
    random_steps: int = AGENT["random_steps"]
    buffer_capacity: int = AGENT["buffer_capacity"]  # in all, split evenly across the training domains
    seeding: str = AGENT["seeding"]  # "shared": every env and the warm-up actions from one seed; "per_domain"
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SACConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown SACConfig fields: {sorted(unknown)}")
        return cls(**values)


def reward_objective(config: SACConfig, risks: torch.Tensor, irm: torch.Tensor | None, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward model's loss and unweighted penalty: :func:`core.methods.objective` on the domain risks (no L2 term)."""
    return methods.objective(
        config.method, risks, irm, torch.zeros((), device=risks.device), step=step, l2=0.0,
        penalty_weight=config.penalty_weight, anneal_iters=config.anneal_iters,
        reduction=config.reduction, irm_reduction=config.irm_reduction,
    )


def mlp(inputs: int, hidden: int, outputs: int, depth: int = 2, output_activation: nn.Module | None = None) -> nn.Sequential:
    """``depth`` hidden ReLU layers of width ``hidden``."""
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, outputs))
    if output_activation is not None:
        layers.append(output_activation)
    return nn.Sequential(*layers)


def orthogonal_init(module: nn.Module) -> None:
    """pytorch_sac's init of the actor and critic: orthogonal weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)


class Critic(nn.Module):
    """Double Q on the encoder's features."""

    def __init__(self, feature_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.q1 = mlp(feature_dim + act_dim, hidden, 1)
        self.q2 = mlp(feature_dim + act_dim, hidden, 1)
        self.apply(orthogonal_init)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        za = torch.cat([z, action], dim=-1)
        return self.q1(za), self.q2(za)


def _to_cpu(obj):
    """A detached CPU copy of every tensor in a nested structure (so a state dict does not alias live parameters)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class Agent:
    """The networks, their optimizers and the temperature; :meth:`act` and :meth:`update`."""

    def __init__(self, config: SACConfig, obs_dim: int, act_dim: int):
        cfg = self.config = config
        if methods.get(cfg.method).input != "full":
            raise ValueError(f"method {cfg.method!r} changes the model input and has no RL counterpart")
        if not 1 <= cfg.critic_seq <= cfg.seq_len:
            raise ValueError("critic_seq must be in 1..seq_len")
        self.device = resolve_device(cfg.device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.target_entropy = -float(act_dim)
        with torch.random.fork_rng(devices=[]):  # initialize from the config's seed, leaving the global RNG alone
            torch.manual_seed(derive_seed(cfg.seed, 10))
            self.encoder = mlp(obs_dim, cfg.encoder_hidden, cfg.feature_dim, output_activation=nn.ReLU())
            self.critic = Critic(cfg.feature_dim, act_dim, cfg.hidden)
            self.actor = mlp(cfg.feature_dim, cfg.hidden, 2 * act_dim)
            self.actor.apply(orthogonal_init)
            self.dynamics = mlp(cfg.feature_dim + act_dim, cfg.model_hidden, cfg.feature_dim)
            self.reward_head = mlp(cfg.feature_dim, cfg.model_hidden, 1)
        for net in self.nets.values():
            net.to(self.device)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)

        adam = dict(fused=True)  # one kernel per optimizer step: ~3x faster than the per-tensor loop on CPU (same update)
        self.critic_opt = torch.optim.Adam([*self.encoder.parameters(), *self.critic.parameters()], lr=cfg.critic_lr, **adam)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, **adam)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, **adam)
        self.model_opt = torch.optim.Adam(
            [*self.dynamics.parameters(), *self.reward_head.parameters(), *self.encoder.parameters()],
            lr=cfg.model_lr, weight_decay=cfg.model_weight_decay, **adam,
        )
        self.generator = torch.Generator(device=self.device)  # the policy's sampling noise
        self.generator.manual_seed(derive_seed(cfg.seed, 11))
        self._encoder_weights = [p for name, p in self.encoder.named_parameters() if name.endswith("weight")]
        self._online = [*self.encoder.parameters(), *self.critic.parameters()]
        self._target = [*self.target_encoder.parameters(), *self.target_critic.parameters()]

    @property
    def nets(self) -> dict[str, nn.Module]:
        names = ("encoder", "critic", "actor", "dynamics", "reward_head", "target_encoder", "target_critic")
        return {name: getattr(self, name) for name in names if hasattr(self, name)}

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, z: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tanh-Gaussian action for features ``z`` and its log-probability (None when deterministic: tanh(mean))."""
        cfg = self.config
        mean, log_std = self.actor(z).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean), None
        log_std = cfg.log_std_min + 0.5 * (cfg.log_std_max - cfg.log_std_min) * (torch.tanh(log_std) + 1.0)
        eps = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * eps
        log_prob = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = log_prob - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # log |d tanh(u) / du|
        return torch.tanh(u), log_prob.sum(dim=-1, keepdim=True)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """Action(s) in [-1, 1] for one observation ``[obs_dim]`` or a batch ``[n, obs_dim]``."""
        x = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        single = x.ndim == 1
        action, _ = self.policy(self.encoder(x[None] if single else x), deterministic)
        action = action.cpu().numpy()
        return action[0] if single else action

    def predict_rewards(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Rewards ``[..., L]`` predicted along the latent rollout from ``obs[..., 0, :]`` with ``action[..., t, :]``."""
        z = self.encoder(obs[..., 0, :])
        predictions = []
        for t in range(self.config.seq_len):
            z = self.dynamics(torch.cat([z, action[..., t, :]], dim=-1))
            predictions.append(self.reward_head(z).squeeze(-1))
        return torch.stack(predictions, dim=-1)

    def reward_risks(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-domain squared reward error and IRM penalty ``[D]`` for stacked batches ``[D, B, L, ...]``."""
        predicted = self.predict_rewards(obs, action)
        risks = (predicted - reward).pow(2).mean(dim=(1, 2))
        irm = torch.stack([irm_penalty_mse(predicted[d], reward[d]) for d in range(reward.shape[0])])
        return risks, irm

    def _stack(self, batches: Sequence[Mapping[str, Any]], key: str) -> torch.Tensor:
        return torch.stack([torch.as_tensor(b[key], device=self.device) for b in batches])

    def update(self, batches: Sequence[Mapping[str, Any]], step: int) -> dict[str, torch.Tensor]:
        """One update from one batch per training domain; returns the losses as detached 0-d tensors.

        Each batch maps ``obs`` / ``next_obs`` ``[B, L, obs_dim]``, ``action``
        ``[B, L, act_dim]``, ``reward`` / ``terminated`` ``[B, L]`` (L = seq_len
        consecutive steps of one episode, as :meth:`ReplayBuffer.sample` gives).
        """
        cfg = self.config
        obs, next_obs = self._stack(batches, "obs"), self._stack(batches, "next_obs")  # [D, B, L, obs]
        action, reward = self._stack(batches, "action"), self._stack(batches, "reward")
        terminated = self._stack(batches, "terminated")
        domains = obs.shape[0]

        # 1. Reward model: one risk (and IRM penalty) per domain, combined by the method's objective (frozen at model_lr 0:
        #    its losses are still reported, computed without a graph).
        with torch.set_grad_enabled(cfg.model_lr > 0):
            risks, irm = self.reward_risks(obs, action, reward)
            model_loss, penalty = reward_objective(cfg, risks, irm, step)
        if cfg.model_lr > 0:
            self.model_opt.zero_grad()
            model_loss.backward()
            self.model_opt.step()

        # 2. Critic (and encoder) on the first critic_seq transitions of every sequence, all domains together.
        c = cfg.critic_seq
        o, o2 = obs[:, :, :c].reshape(-1, self.obs_dim), next_obs[:, :, :c].reshape(-1, self.obs_dim)
        a = action[:, :, :c].reshape(-1, self.act_dim)
        r, done = reward[:, :, :c].reshape(-1, 1), terminated[:, :, :c].reshape(-1, 1)
        with torch.no_grad():
            next_action, next_log_prob = self.policy(self.encoder(o2))
            target_q1, target_q2 = self.target_critic(self.target_encoder(o2), next_action)
            target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_prob
            target_q = r + (1.0 - done) * cfg.gamma * target_v
        z = self.encoder(o)
        q1, q2 = self.critic(z, a)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        if cfg.encoder_l1:
            critic_loss = critic_loss + cfg.encoder_l1 * torch.stack([w.abs().sum() for w in self._encoder_weights]).sum()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        losses = {"model_loss": model_loss, "reward_loss": risks.mean(), "penalty": penalty, "critic_loss": critic_loss,
                  "q": q1.mean()}
        for d in range(domains):
            losses[f"reward_loss_{d}"] = risks[d]

        # 3. Actor and temperature, on the encoder's features detached.
        if step % cfg.actor_update_every == 0:
            pi, log_prob = self.policy(z.detach())
            self.critic.requires_grad_(False)  # the actor's gradient flows through the critic; its weights need none
            pi_q1, pi_q2 = self.critic(z.detach(), pi)
            actor_loss = (self.alpha.detach() * log_prob - torch.min(pi_q1, pi_q2)).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.critic.requires_grad_(True)
            self.actor_opt.step()
            alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
            losses.update(actor_loss=actor_loss, alpha_loss=alpha_loss, entropy=-log_prob.mean())

        # 4. Targets: target <- target + tau * (online - target).
        if step % cfg.target_update_every == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target, self._online, cfg.tau)
        losses["alpha"] = self.alpha
        return {k: v.detach() for k, v in losses.items()}

    def state_dict(self) -> dict[str, Any]:
        return _to_cpu({
            "nets": {name: net.state_dict() for name, net in self.nets.items()},
            "log_alpha": self.log_alpha,
            "optimizers": {name: getattr(self, name).state_dict() for name in ("critic_opt", "actor_opt", "alpha_opt", "model_opt")},
            "generator": self.generator.get_state(),
        })

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name, opt_state in state["optimizers"].items():
            getattr(self, name).load_state_dict(opt_state)
        self.generator.set_state(state["generator"])


class ReplayBuffer:
    """Transitions of one domain (float32), sampled as ``seq_len`` consecutive steps of one episode."""

    FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "episode", "index")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seq_len: int):
        self.capacity, self.seq_len = int(capacity), int(seq_len)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.episode = np.full(capacity, -1, np.int64)  # episode number of each transition
        self.index = np.full(capacity, -1, np.int64)  # running transition number: consecutive = same sequence
        self.size = self.head = self.count = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool, episode: int) -> None:
        i = self.head
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, float(terminated)
        self.episode[i], self.index[i] = episode, self.count
        self.count += 1
        self.head = (self.head + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` sequences (with replacement) whose steps were stored consecutively within one episode."""
        offsets = np.arange(self.seq_len)
        starts = np.empty(0, np.int64)
        for _ in range(1000):
            candidates = rng.integers(0, self.size, size=batch_size)
            rows = (candidates[:, None] + offsets) % self.capacity
            ok = (self.index[rows] == self.index[candidates][:, None] + offsets).all(axis=1)
            ok &= (self.episode[rows] == self.episode[candidates][:, None]).all(axis=1)
            starts = np.concatenate([starts, candidates[ok]])[:batch_size]
            if len(starts) == batch_size:
                break
        else:
            raise RuntimeError(f"no stored run of {self.seq_len} steps within one episode to sample")
        rows = (starts[:, None] + offsets) % self.capacity
        return {key: getattr(self, key)[rows] for key in ("obs", "action", "reward", "next_obs", "terminated")}

    def state_dict(self) -> dict[str, Any]:
        """The filled rows only (all of them once the buffer has wrapped) and the write position."""
        return {"capacity": self.capacity, "size": self.size, "head": self.head, "count": self.count,
                **{key: getattr(self, key)[: self.size].copy() for key in self.FIELDS}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"buffer capacity {state['capacity']} in the state, {self.capacity} configured")
        self.size, self.head, self.count = int(state["size"]), int(state["head"]), int(state["count"])
        for key in self.FIELDS:
            getattr(self, key)[: self.size] = state[key]


def evaluate(env, agent: Agent, episodes: int = 10) -> float:
    """Mean return of ``episodes`` full episodes with the deterministic (mean) action."""
    total = 0.0
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic=True))
            total += reward
            done = terminated or truncated
    return total / episodes


OnEval = Callable[[int, float, float, dict], None]


def flushing_denormals() -> bool:
    """Whether CPU arithmetic flushes denormals to zero now (torch has a setter for it, no getter)."""
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


class Trainer:
    """The training domains stepped in lock-step, the agent, the replay buffers, periodic evaluation; resumable."""

    def __init__(self, config: SACConfig, env_config: EnvConfig, *, eval_episodes: int = 10, state: Mapping[str, Any] | None = None):
        self.config, self.env_config, self.eval_episodes = config, env_config, int(eval_episodes)
        ec, seed = env_config, config.seed
        from core.rl.envs import make_domains, make_env

        if config.seeding not in SEEDINGS:
            raise ValueError(f"seeding must be one of {SEEDINGS}, got {config.seeding!r}")
        shared = config.seeding == "shared"
        self.envs = make_domains(ec.task, ec.train_factors, seed=derive_seed(seed, 0), shared_seed=shared, **ec.domain_kwargs())
        # Shared: the evaluation envs too start from the training envs' seed (the REx code seeds its test env alike).
        self.eval_envs = {
            name: make_env(ec.task, factor, seed=derive_seed(seed, 0 if shared else i), noise_seed=derive_seed(seed, i, 1),
                           **ec.domain_kwargs())
            for i, (name, factor) in enumerate((("train", ec.train_factors[0]), ("test", ec.test_factor)), start=1)
        }
        obs_dim, act_dim = self.envs[0].observation_space.shape[0], self.envs[0].action_space.shape[0]
        self.agent = Agent(config, obs_dim, act_dim)
        capacity = max(config.buffer_capacity // len(self.envs), config.seq_len)  # the total split across the domains
        self.buffers = [ReplayBuffer(capacity, obs_dim, act_dim, config.seq_len) for _ in self.envs]
        self.updates_per_step = config.updates_per_step or len(self.envs)
        self.rng = np.random.default_rng(derive_seed(seed, 3))  # random warm-up actions and replay sampling
        self.step = 0
        self.obs: list[np.ndarray] | None = None  # current observation per domain; None until the first reset
        n = len(self.envs)
        self.episode, self.episode_step, self.episode_return = [0] * n, [0] * n, [0.0] * n
        self.last_returns: list[float | None] = [None] * n  # return of each domain's last finished training episode
        self.evaluations: list[dict[str, Any]] = []
        self._loss_sums: dict[str, Any] = {}  # running sums of the update losses since the last evaluation
        self._loss_counts: dict[str, int] = {}
        if state is not None:
            self.load_state_dict(state)

    def run(self, total_steps: int, eval_every: int, on_eval: OnEval | None = None) -> list[dict[str, Any]]:
        """Train until ``total_steps``, evaluating at multiples of ``eval_every`` and at the end; the evaluations so far.

        On a CPU this flushes denormal floats to zero while it trains (``torch.set_flush_denormal``; the process's
        previous mode is restored on return): Adam's first moment of a weight whose gradient stays zero (a dead
        ReLU unit) shrinks by beta1 = 0.9 an update and is denormal within ~800 updates, and denormal arithmetic
        made the update ~4x slower (study preset, step 10,000: 4.3 lock-steps/s, 17.0 with the flush;
        ``benchmarks/rl_denormals.py``).
        """
        if eval_every < 1:
            raise ValueError("eval_every must be positive")
        flush = self.agent.device.type == "cpu" and not flushing_denormals()
        if flush:
            torch.set_flush_denormal(True)
        try:
            if self.obs is None:
                self.obs = [env.reset()[0] for env in self.envs]
            while self.step < total_steps:
                self._lockstep()
                if self.step % eval_every == 0 or self.step == total_steps:
                    self._evaluate(on_eval)
        finally:
            if flush:
                torch.set_flush_denormal(False)
        return self.evaluations

    def _lockstep(self) -> None:
        cfg = self.config
        if self.step < cfg.random_steps:  # shared seeding: the same warm-up action in every domain (one seed, as the REx code)
            rows = 1 if cfg.seeding == "shared" else len(self.envs)
            actions = self.rng.uniform(-1.0, 1.0, size=(rows, self.agent.act_dim)).astype(np.float32)
            actions = np.broadcast_to(actions, (len(self.envs), self.agent.act_dim))
        else:
            actions = self.agent.act(np.stack(self.obs))
        for d, env in enumerate(self.envs):
            next_obs, reward, terminated, truncated, _ = env.step(actions[d])
            self.buffers[d].add(self.obs[d], actions[d], reward, next_obs, terminated, self.episode[d])
            self.episode_return[d] += reward
            self.episode_step[d] += 1
            if terminated or truncated:
                self.last_returns[d] = self.episode_return[d]
                self.episode[d] += 1
                self.episode_step[d], self.episode_return[d] = 0, 0.0
                next_obs, _ = env.reset()
            self.obs[d] = next_obs
        self.step += 1
        if self.step > max(cfg.random_steps, cfg.seq_len):
            for _ in range(self.updates_per_step):
                losses = self.agent.update([b.sample(cfg.batch_size, self.rng) for b in self.buffers], self.step)
                for key, value in losses.items():
                    self._loss_sums[key] = self._loss_sums.get(key, 0.0) + value
                    self._loss_counts[key] = self._loss_counts.get(key, 0) + 1

    def _evaluate(self, on_eval: OnEval | None) -> None:
        train_return = evaluate(self.eval_envs["train"], self.agent, self.eval_episodes)
        test_return = evaluate(self.eval_envs["test"], self.agent, self.eval_episodes)
        losses = {key: float(value) / self._loss_counts[key] for key, value in self._loss_sums.items()}
        self._loss_sums, self._loss_counts = {}, {}
        self.evaluations.append({"step": self.step, "train_return": train_return, "test_return": test_return,
                                 "episode_returns": list(self.last_returns), "losses": losses})
        if on_eval is not None:
            on_eval(self.step, train_return, test_return, losses)

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue exactly from here (see the module docstring)."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "env_config": self.env_config.to_dict(),
            "eval_episodes": self.eval_episodes,
            "agent": self.agent.state_dict(),
            "buffers": [b.state_dict() for b in self.buffers],
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "envs": [env.get_state() for env in self.envs],
            "eval_envs": {name: env.get_state() for name, env in self.eval_envs.items()},
            "step": self.step,
            "obs": None if self.obs is None else [o.copy() for o in self.obs],
            "episode": list(self.episode),
            "episode_step": list(self.episode_step),
            "episode_return": list(self.episode_return),
            "last_returns": list(self.last_returns),
            "evaluations": copy.deepcopy(self.evaluations),
            "loss_sums": {key: float(value) for key, value in self._loss_sums.items()},
            "loss_counts": dict(self._loss_counts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r}, expected {STATE_VERSION}")
        ours = {k: v for k, v in self.config.to_dict().items() if k != "device"}
        theirs = {k: v for k, v in state["config"].items() if k != "device"}
        if ours != theirs or state["env_config"] != self.env_config.to_dict():
            raise ValueError("the state was saved by a run with another configuration")
        self.agent.load_state_dict(state["agent"])
        for buffer, buffer_state in zip(self.buffers, state["buffers"]):
            buffer.load_state_dict(buffer_state)
        self.rng.bit_generator.state = state["rng"]
        for env, env_state in zip(self.envs, state["envs"]):
            env.set_state(env_state)
        for name, env in self.eval_envs.items():
            env.set_state(state["eval_envs"][name])
        self.step = int(state["step"])
        self.obs = None if state["obs"] is None else [np.array(o, np.float32) for o in state["obs"]]
        self.episode, self.episode_step = list(state["episode"]), list(state["episode_step"])
        self.episode_return, self.last_returns = list(state["episode_return"]), list(state["last_returns"])
        self.evaluations = copy.deepcopy(state["evaluations"])
        self._loss_sums, self._loss_counts = dict(state["loss_sums"]), dict(state["loss_counts"])


def train(
    config: SACConfig,
    env_config: EnvConfig,
    total_steps: int,
    eval_every: int,
    on_eval: OnEval | None = None,
    state: Mapping[str, Any] | None = None,
    *,
    eval_episodes: int = 10,
) -> Trainer:
    """Build a :class:`Trainer` (from ``state`` when given) and run it to ``total_steps``; returns the trainer."""
    trainer = Trainer(config, env_config, eval_episodes=eval_episodes, state=state)
    trainer.run(total_steps, eval_every, on_eval)
    return trainer


def save_state(state: Mapping[str, Any], path) -> None:
    """Write a :meth:`Trainer.state_dict` with ``torch.save``."""
    torch.save(dict(state), path)


def load_state(path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (pickle: numpy arrays and RNG states, so only own files)."""
    return torch.load(path, map_location="cpu", weights_only=False)
