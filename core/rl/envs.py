"""DeepMind Control tasks as gymnasium envs, one per domain, each with its spurious feature (thesis §5.4).

A *domain* is a task (``"cartpole-swingup"``, ``"finger-spin"``, ``"walker-walk"``,
any ``"{domain}-{task}"`` of ``dm_control.suite``, or the toy ``"point-reach"``)
seen through :class:`SpuriousDomain`, which follows the REx authors' released
code (``reinforcement_learning_with_spurious_correlations/dmc2gym``):

- the state is dm_control's observation dict flattened **in the dict's own
  order** (the task's ``get_observation`` OrderedDict, as dmc2gym's
  ``_flatten_obs`` does);
- the real last ``k`` entries get ``N(0, 1) * noise`` added (noise 0.01, k = 1);
- the spurious feature, the *clean* last ``k`` entries times the domain's
  factor matrix (``factor * eye(k)`` for a number: train 1 and 2, test 3), is
  appended;
- optionally (partial observability) entries named in ``hide`` are dropped
  from the real part: a whole observation key (``"velocity"``) or one entry
  (``"velocity[1]"``). The copied entries are always the last ``k`` of the
  *full* state, so hiding them leaves the spurious copy as their only trace.

Observation = ``[noisy state without the hidden entries, spurious feature]``
(float32), so its size is ``state size - hidden + k``.

Which entry is copied (k = 1), checked against dm_control 1.0.50's
``get_observation`` and named physics data (see ``tests/test_rl_core.py``):

======================  =====================================  ==============================================
task                    observation dict (sizes)               last flattened entry
======================  =====================================  ==============================================
cartpole-swingup        position (3), velocity (2)             velocity[1] = qvel['hinge_1'], pole angular velocity
finger-spin             position (4), velocity (3), touch (2)  touch[1] = log1p(sensordata['touchbottom'])
walker-walk             orientations (14), height (), velocity (9)  velocity[8] = qvel['left_ankle']
======================  =====================================  ==============================================

This is why the env is built on ``dm_control.suite`` directly (a ~60-line
adapter, :class:`DMCEnv`) rather than shimmy's ``DmControlCompatibilityV0``:
shimmy exposes a ``gymnasium.spaces.Dict``, which sorts its keys, so
``FlattenObservation`` puts finger spin's ``velocity`` last (velocity[2], not
touch[1]). The adapter also gives exact mid-episode state capture
(:meth:`DMCEnv.get_state`) for checkpoints.

Episodes: ``episode_steps`` agent steps (1000, the paper's; dm_control's own
time limit is switched off), each repeating the action ``action_repeat``
times (1, the paper's) and summing the rewards. Smoke runs shorten episodes
with ``episode_steps`` (e.g. 100); the return then covers fewer steps, so it
is on a smaller scale than the paper's 0-1000. Time-limit ends are
``truncated`` (bootstrapped), never ``terminated``.

The training domains are a plain list stepped in lock-step by the trainer
(:func:`make_domains`), not a gymnasium vector env: the envs run in one process
either way, a list keeps each env's checkpoint state and episode bookkeeping
explicit, and it avoids the vector env's autoreset semantics (gymnasium 1.x
defaults to ``NEXT_STEP``, where the step after an episode's end is a reset).

Everything is seeded: dm_control's task ``random`` (initial states), the
observation noise, and the toy task's draws; :meth:`SpuriousDomain.get_state`
/ ``set_state`` capture all of it, physics included.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "disable")  # state observations only: never load a rendering backend

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from core.rl.hparams import DOMAINS
from core.rl.layouts import entry_names, kept_entries
from core.rl.seeding import derive_seed

DEFAULT_EPISODE_STEPS = 1000
# The entry the spec says the REx code copies, per task (k = 1); the tests check the layout gives exactly these.
SPEC_COPIED = {"cartpole-swingup": "velocity[1]", "finger-spin": "touch[1]", "walker-walk": "velocity[8]"}
# MjModel fields that suite tasks change per episode (e.g. reacher's target geom_pos); saved with the physics state.
_MODEL_FIELDS = ("body_pos", "body_quat", "geom_pos", "geom_quat", "geom_size", "site_pos", "site_quat")


def parse_task(task: str) -> tuple[str, str]:
    """``"cartpole-swingup"`` -> ("cartpole", "swingup"); ``"ball_in_cup-catch"`` -> ("ball_in_cup", "catch")."""
    domain, sep, name = task.partition("-")
    if not sep or not domain or not name:
        raise ValueError(f"task {task!r} is not of the form '<domain>-<task>' (e.g. cartpole-swingup)")
    return domain, name


class DMCEnv(gym.Env):
    """A ``dm_control.suite`` task as a gymnasium env with the clean flat state (float64) as observation.

    ``layout`` lists (observation key, size) in dm_control's order; actions are
    in [-1, 1] and rescaled to the task's action bounds (as dmc2gym does).
    """

    metadata = {"render_modes": []}

    def __init__(self, task: str, seed: int = 0, episode_steps: int = DEFAULT_EPISODE_STEPS, action_repeat: int = 1):
        from dm_control import suite  # imported here so that the toy task works without dm_control

        if episode_steps < 1 or action_repeat < 1:
            raise ValueError("episode_steps and action_repeat must be positive")
        domain, name = parse_task(task)
        if (domain, name) not in suite.ALL_TASKS:
            raise ValueError(f"unknown dm_control task {task!r}")
        self.task = task
        self.episode_steps, self.action_repeat = int(episode_steps), int(action_repeat)
        self._env = suite.load(domain, name, task_kwargs={"random": int(seed), "time_limit": float("inf")})
        self.layout = [(key, int(np.prod(s.shape))) for key, s in self._env.observation_spec().items()]
        size = sum(n for _, n in self.layout)
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float64)
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        self._steps = 0

    @staticmethod
    def _flatten(observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float64).ravel() for v in observation.values()])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._steps = 0
        return self._flatten(self._env.reset().observation), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        reward = 0.0
        for _ in range(self.action_repeat):
            time_step = self._env.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        self._steps += 1
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = not terminated and (self._steps >= self.episode_steps or time_step.last())
        return self._flatten(time_step.observation), float(reward), terminated, truncated, {}

    def get_state(self) -> dict[str, Any]:
        """Everything to continue this episode exactly: MuJoCo's integration state, per-episode model fields, RNG."""
        import mujoco

        physics = self._env.physics
        return {
            "physics": physics.get_state(mujoco.mjtState.mjSTATE_INTEGRATION).copy(),
            "model": {name: getattr(physics.model, name).copy() for name in _MODEL_FIELDS},
            "task_random": self._env.task.random.get_state(legacy=False),
            "steps": self._steps,
            "dm_step_count": self._env._step_count,
            "dm_reset_next_step": self._env._reset_next_step,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        import mujoco

        physics = self._env.physics
        for name, value in state["model"].items():
            getattr(physics.model, name)[...] = value
        physics.set_state(np.asarray(state["physics"], np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        # dm_control steps as mj_step2 then mj_step1: recompute the position/velocity stage, as after a step.
        mujoco.mj_step1(physics.model.ptr, physics.data.ptr)
        self._env.task.random.set_state(state["task_random"])
        self._steps = int(state["steps"])
        self._env._step_count = int(state["dm_step_count"])
        self._env._reset_next_step = bool(state["dm_reset_next_step"])


class PointReach(gym.Env):
    """Toy task (no dm_control): a point on [-1, 1] must reach a target.

    State ``position (1), target (1)``, both drawn uniformly from [-1, 1] at
    reset; the action in [-1, 1] moves the point by ``0.2 * action`` (clipped to
    [-1, 1]); reward ``-|position - target|`` after the move; episodes of
    ``episode_steps`` (25) steps. A random policy scores about -17, a good one
    about -3. The copied entry (k = 1) is ``target[0]``.
    """

    metadata = {"render_modes": []}
    layout = [("position", 1), ("target", 1)]

    def __init__(self, seed: int = 0, episode_steps: int = 25, action_repeat: int = 1):
        self.episode_steps, self.action_repeat = int(episode_steps), int(action_repeat)
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._rng = np.random.default_rng(seed)
        self._x = self._goal = 0.0
        self._steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._x, self._goal], np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._x, self._goal = (float(v) for v in self._rng.uniform(-1.0, 1.0, size=2))
        self._steps = 0
        return self._obs(), {}

    def step(self, action):
        reward = 0.0
        for _ in range(self.action_repeat):
            self._x = float(np.clip(self._x + 0.2 * float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0)), -1.0, 1.0))
            reward -= abs(self._x - self._goal)
        self._steps += 1
        return self._obs(), reward, False, self._steps >= self.episode_steps, {}

    def get_state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state, "x": self._x, "goal": self._goal, "steps": self._steps}

    def set_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._x, self._goal, self._steps = float(state["x"]), float(state["goal"]), int(state["steps"])


TOY_TASKS = {"point-reach": PointReach}


def factor_matrix(factor, k: int) -> np.ndarray:
    """A number f -> f * eye(k) (the spec's eye*1, eye*2, eye*3); a k x k matrix as given.

    (The released code builds training factors as ``eye(k) + i``, which equals
    ``(i + 1) * eye(k)`` only for k = 1.)
    """
    matrix = np.asarray(factor, np.float64)
    if matrix.ndim == 0:
        return float(matrix) * np.eye(k)
    if matrix.shape != (k, k):
        raise ValueError(f"factor must be a number or a {k}x{k} matrix, got shape {matrix.shape}")
    return matrix


class SpuriousDomain(gym.Wrapper):
    """One domain: noise on the real last ``k`` state entries, their clean copy times ``factor`` appended, ``hide`` dropped.

    ``info["state"]`` carries the clean full state of each reset / step; attributes
    ``names`` (the observation's entry names; ``spurious[i]`` for the copies),
    ``copied`` (the names of the copied state entries) and ``layout``.
    """

    def __init__(self, env: gym.Env, factor=1.0, k: int = 1, noise: float = 0.01, hide: Sequence[str] = (), seed: int = 0):
        super().__init__(env)
        self.layout = list(env.unwrapped.layout)
        names = entry_names(self.layout)
        n = len(names)
        self._keep = np.array(kept_entries(self.layout, k, hide), dtype=np.int64)
        self.k, self.noise, self.hide = int(k), float(noise), tuple(hide)
        self.factor = factor_matrix(factor, self.k)
        self._tail = slice(n - self.k, n)
        self.copied = names[self._tail]
        self.names = [names[i] for i in self._keep] + [f"spurious[{i}]" for i in range(self.k)]
        self.observation_space = spaces.Box(-np.inf, np.inf, (len(self.names),), np.float32)
        self._rng = np.random.default_rng(seed)

    def _observe(self, state: np.ndarray) -> np.ndarray:
        clean_tail = state[self._tail]
        noisy = state.copy()
        noisy[self._tail] += self._rng.standard_normal(self.k) * self.noise
        return np.concatenate([noisy[self._keep], clean_tail @ self.factor]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(derive_seed(seed, 1))
        state, info = self.env.reset(seed=None if seed is None else derive_seed(seed, 0), options=options)
        return self._observe(state), dict(info, state=state)

    def step(self, action):
        state, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(state), reward, terminated, truncated, dict(info, state=state)

    def get_state(self) -> dict[str, Any]:
        return {"env": self.env.unwrapped.get_state(), "noise_rng": self._rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.env.unwrapped.set_state(state["env"])
        self._rng.bit_generator.state = state["noise_rng"]


def make_env(
    task: str,
    factor=1.0,
    *,
    k: int = 1,
    noise: float = 0.01,
    hide: Sequence[str] = (),
    seed: int = 0,
    noise_seed: int | None = None,
    episode_steps: int | None = None,
    action_repeat: int = 1,
) -> SpuriousDomain:
    """One domain of ``task`` with spurious factor ``factor`` (e.g. the test domain, factor 3).

    ``seed`` seeds the task (initial states), ``noise_seed`` the observation
    noise (None: derived from ``seed``). ``episode_steps`` None: 1000 for
    dm_control, 25 for the toy task.
    """
    env_seed = derive_seed(seed, 0)
    noise_seed = derive_seed(seed, 1) if noise_seed is None else int(noise_seed)
    if task in TOY_TASKS:
        base = TOY_TASKS[task](seed=env_seed, episode_steps=episode_steps or 25, action_repeat=action_repeat)
    else:
        base = DMCEnv(task, seed=env_seed, episode_steps=episode_steps or DEFAULT_EPISODE_STEPS, action_repeat=action_repeat)
    return SpuriousDomain(base, factor, k=k, noise=noise, hide=hide, seed=noise_seed)


def make_domains(
    task: str,
    factors: Sequence = (1.0, 2.0),
    k: int = 1,
    noise: float = 0.01,
    hide: Sequence[str] = (),
    seed: int = 0,
    *,
    shared_seed: bool = False,
    episode_steps: int | None = None,
    action_repeat: int = 1,
) -> list[SpuriousDomain]:
    """The training domains, one env per factor; the trainer steps them in lock-step.

    ``shared_seed``: every domain's task seeded with ``seed`` (the same initial
    states, as the REx code's ``utils.make_env`` seeds every env with
    ``cfg.seed``), the observation noise of each drawn apart (the REx code
    draws it from one global stream); otherwise each domain its own seed.
    """
    return [
        make_env(task, f, k=k, noise=noise, hide=hide, seed=seed if shared_seed else derive_seed(seed, i),
                 noise_seed=derive_seed(seed, i, 1) if shared_seed else None, episode_steps=episode_steps,
                 action_repeat=action_repeat)
        for i, f in enumerate(factors)
    ]


@dataclass
class EnvConfig:
    """The domains of one run: task, factors (train and test), k, noise, hidden entries, episode length."""

    task: str = "cartpole-swingup"
    train_factors: tuple = DOMAINS["train_factors"]  # the REx RL code's domains (core.rl.hparams)
    test_factor: Any = DOMAINS["test_factor"]
    k: int = DOMAINS["k"]
    noise: float = DOMAINS["noise"]
    hide: tuple = ()
    episode_steps: int | None = None  # None: 1000 (dm_control), 25 (point-reach)
    action_repeat: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EnvConfig":
        values = dict(values)
        for key in ("train_factors", "hide"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def domain_kwargs(self) -> dict[str, Any]:
        return dict(k=self.k, noise=self.noise, hide=self.hide, episode_steps=self.episode_steps, action_repeat=self.action_repeat)
