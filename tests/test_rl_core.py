"""core.rl: the spurious-feature domains (dm_control) and SAC with the penalized reward model.

Fast (well under 90 s on 2 CPU cores): the learning and resume tests use the
toy ``point-reach`` task and small networks; dm_control tests are skipped
when dm_control is not installed (``pip install -e '.[rl]'``).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")

from core import methods  # noqa: E402
from core.rl.envs import SPEC_COPIED, EnvConfig, make_domains, make_env  # noqa: E402
from core.rl.sac import Agent, SACConfig, Trainer, load_state, reward_objective, save_state  # noqa: E402

# Small networks and fast learning rates: the paper's sizes and 1e-5 learning rates are far too slow for a test.
SMALL = dict(hidden=64, encoder_hidden=64, feature_dim=16, model_hidden=32, batch_size=64, actor_lr=1e-3,
             critic_lr=1e-3, alpha_lr=3e-3, model_lr=1e-3, buffer_capacity=10_000)


@pytest.fixture(scope="module")
def dm_control():
    return pytest.importorskip("dm_control")


def physics(env):
    return env.unwrapped._env.physics


# --- environments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, state_size, act_size",
    [("cartpole-swingup", 5, 1), ("finger-spin", 9, 2), ("walker-walk", 24, 6)],
)
def test_spaces_and_copied_entry(dm_control, task, state_size, act_size):
    env = make_env(task, 1.0, k=1, seed=0)
    assert env.unwrapped.observation_space.shape == (state_size,)
    assert env.observation_space.shape == (state_size + 1,)
    assert env.action_space.shape == (act_size,)
    assert env.copied == [SPEC_COPIED[task]]
    obs, info = env.reset()
    assert obs.shape == (state_size + 1,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)


def test_copied_entry_is_the_named_physical_quantity(dm_control):
    """The last flattened entry is the pole's angular velocity / touch[1] / the left ankle's velocity."""
    rng = np.random.default_rng(0)
    cases = {
        "cartpole-swingup": lambda p: p.named.data.qvel["hinge_1"][0],
        "walker-walk": lambda p: p.named.data.qvel["left_ankle"][0],
        "finger-spin": lambda p: np.log1p(p.named.data.sensordata["touchbottom"][0]),
    }
    for task, quantity in cases.items():
        env = make_env(task, 1.0, seed=1)
        env.reset()
        values = []
        for _ in range(200):
            _, _, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            assert info["state"][-1] == pytest.approx(quantity(physics(env)), abs=1e-12)
            values.append(info["state"][-1])
        assert np.ptp(values) > 0, task  # it moves (touch[1] too, under random actions)


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0])
def test_spurious_feature_and_noise(dm_control, factor):
    noise = 0.01
    env = make_env("cartpole-swingup", factor, k=1, noise=noise, seed=3)
    obs, info = env.reset()
    rng = np.random.default_rng(1)
    residuals = []
    for _ in range(3000):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 1).astype(np.float32))
        state = info["state"]
        # The spurious copy: the clean last entry times the factor (float32 observation).
        assert obs[-1] == pytest.approx(factor * state[-1], rel=1e-6, abs=1e-6)
        # The other entries are the clean state, except the real last one, which is noisy.
        np.testing.assert_allclose(obs[:-2], state[:-1], rtol=1e-6, atol=1e-6)
        residuals.append(float(obs[-2]) - state[-1])
    residuals = np.array(residuals)
    assert abs(residuals.mean()) < 4 * noise / np.sqrt(len(residuals))
    assert residuals.std() == pytest.approx(noise, rel=0.08)


def test_k_and_factor_matrix(dm_control):
    env = make_env("walker-walk", [[1.0, 0.5], [0.0, 2.0]], k=2, noise=0.0, seed=0)
    assert env.copied == ["velocity[7]", "velocity[8]"]
    obs, info = env.reset()
    obs, *_, info = env.step(np.zeros(6, np.float32))
    np.testing.assert_allclose(obs[-2:], info["state"][-2:] @ np.array([[1.0, 0.5], [0.0, 2.0]]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(obs[:-2], info["state"], rtol=1e-6, atol=1e-6)  # noise 0: the real entries are clean


def test_hidden_entries_are_absent(dm_control):
    env = make_env("cartpole-swingup", 2.0, hide=("velocity",), seed=0)
    assert env.observation_space.shape == (3 + 1,)
    assert env.names == ["position[0]", "position[1]", "position[2]", "spurious[0]"]
    obs, info = env.reset()
    obs, *_, info = env.step(np.ones(1, np.float32))
    np.testing.assert_allclose(obs[:3], info["state"][:3], rtol=1e-6, atol=1e-7)
    assert obs[3] == pytest.approx(2.0 * info["state"][4], rel=1e-6, abs=1e-7)  # the copy of the hidden velocity[1]

    env = make_env("finger-spin", 1.0, hide=("position[1]", "touch"), seed=0)
    assert env.names == ["position[0]", "position[2]", "position[3]", "velocity[0]", "velocity[1]", "velocity[2]", "spurious[0]"]
    assert env.observation_space.shape == (7,)
    with pytest.raises(ValueError, match="cannot hide"):
        make_env("finger-spin", 1.0, hide=("speed",))


def test_domains_are_seeded_and_distinct(dm_control):
    a = make_domains("cartpole-swingup", (1.0, 2.0), seed=5, episode_steps=20)
    b = make_domains("cartpole-swingup", (1.0, 2.0), seed=5, episode_steps=20)
    starts_a = [env.reset()[1]["state"] for env in a]
    starts_b = [env.reset()[1]["state"] for env in b]
    np.testing.assert_array_equal(starts_a[0], starts_b[0])
    assert not np.array_equal(starts_a[0], starts_a[1])  # each domain its own initial states
    env = a[0]
    for t in range(20):
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        assert not terminated and truncated == (t == 19)  # episode_steps override, time limit = truncation


def test_env_state_restores_mid_episode_exactly(dm_control):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (60, 6)).astype(np.float32)
    env = make_env("walker-walk", 2.0, seed=7, episode_steps=50)
    env.reset()
    for a in actions[:30]:
        env.step(a)
    saved = env.get_state()
    first = [env.step(a) for a in actions[30:]]  # crosses the episode end (step 50) into a reset
    first.append(env.reset())
    other = make_env("walker-walk", 2.0, seed=99, episode_steps=50)
    other.reset()
    other.set_state(saved)
    second = [other.step(a) for a in actions[30:]]
    second.append(other.reset())
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:-1] == y[1:-1]


# --- reward-model objective -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["erm", "irm", "vrex", "mmrex", "ri"])
@pytest.mark.parametrize("step", [5, 50])
def test_reward_objective_is_the_registry(method, step):
    config = SACConfig(method=method, penalty_weight=10.0, anneal_iters=20)
    risks, irm = torch.tensor([0.3, 0.7]), torch.tensor([0.02, 0.08])
    loss, penalty = reward_objective(config, risks, irm, step)
    expected_loss, expected_penalty = methods.objective(
        method, risks, irm, 0.0, step=step, l2=0.0, penalty_weight=10.0, anneal_iters=20, reduction="mean", irm_reduction="mean")
    assert loss.item() == pytest.approx(expected_loss.item()) and penalty.item() == pytest.approx(expected_penalty.item())
    # By hand, for two domains: weight 1 before the anneal step, 10 (and the loss divided by 10) from it on.
    hand_penalty = {"erm": 0.0, "ri": 0.0, "irm": 0.05, "vrex": 0.16, "mmrex": 0.4}[method]
    risk = 0.7 if method == "ri" else 0.5
    w = 10.0 if step >= 20 else 1.0
    hand_loss = risk / w + hand_penalty if method in ("irm", "vrex", "mmrex") else risk
    assert penalty.item() == pytest.approx(hand_penalty)
    assert loss.item() == pytest.approx(hand_loss)


@pytest.mark.parametrize("method", ["erm", "irm", "mmrex"])
def test_update_uses_the_registry_objective(method):
    config = SACConfig(method=method, penalty_weight=3.0, anneal_iters=2, seq_len=3, **SMALL)
    agent = Agent(config, obs_dim=5, act_dim=2)
    rng = np.random.default_rng(0)
    batches = [
        {"obs": rng.normal(size=(8, 3, 5)).astype(np.float32), "next_obs": rng.normal(size=(8, 3, 5)).astype(np.float32),
         "action": rng.uniform(-1, 1, (8, 3, 2)).astype(np.float32), "reward": (rng.random((8, 3)) * scale).astype(np.float32),
         "terminated": np.zeros((8, 3), np.float32)}
        for scale in (1.0, 3.0)
    ]
    stacked = {k: torch.stack([torch.as_tensor(b[k]) for b in batches]) for k in batches[0]}
    with torch.no_grad():
        predicted = agent.predict_rewards(stacked["obs"], stacked["action"])
        risks, irm = agent.reward_risks(stacked["obs"], stacked["action"], stacked["reward"])
    np.testing.assert_allclose(risks.numpy(), ((predicted - stacked["reward"]) ** 2).mean(dim=(1, 2)).numpy(), rtol=1e-6)
    for d in range(2):
        assert irm[d].item() == pytest.approx(((2 * (predicted[d] - stacked["reward"][d]) * predicted[d]).mean() ** 2).item(), rel=1e-5)
    expected_loss, expected_penalty = methods.objective(method, risks, irm, 0.0, step=4, l2=0.0, penalty_weight=3.0,
                                                        anneal_iters=2, reduction="mean", irm_reduction="mean")
    losses = agent.update(batches, step=4)
    assert losses["model_loss"].item() == pytest.approx(expected_loss.item(), rel=1e-5)
    assert losses["penalty"].item() == pytest.approx(expected_penalty.item(), rel=1e-5, abs=1e-9)
    assert [losses[f"reward_loss_{d}"].item() for d in range(2)] == pytest.approx(risks.tolist(), rel=1e-5)


def test_grayscale_method_is_refused():
    with pytest.raises(ValueError, match="model input"):
        Agent(SACConfig(method="grayscale", **SMALL), 3, 1)


def test_configs_are_json():
    config = SACConfig(method="vrex", **SMALL)
    assert SACConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    env_config = EnvConfig(task="walker-walk", train_factors=(1.0, 2.0), hide=("velocity",), episode_steps=100)
    assert EnvConfig.from_dict(json.loads(json.dumps(env_config.to_dict()))) == env_config
    with pytest.raises(ValueError, match="unknown"):
        SACConfig.from_dict({"lr": 1.0})


# --- training ---------------------------------------------------------------------------------------------------


def test_sac_learns_point_reach():
    """Toy task (1-D point to a random target, 25-step episodes): random play scores about -17."""
    config = SACConfig(random_steps=200, seed=0, **SMALL)
    trainer = Trainer(config, EnvConfig(task="point-reach"), eval_episodes=10)
    evaluations = trainer.run(total_steps=600, eval_every=200)
    first, last = evaluations[0], evaluations[-1]
    assert [e["step"] for e in evaluations] == [200, 400, 600]
    assert first["train_return"] < -8  # untrained (the updates start after step 200)
    assert last["train_return"] > -6 and last["test_return"] > -6
    assert {"critic_loss", "actor_loss", "reward_loss", "penalty", "alpha"} <= set(last["losses"])


def _roundtrip(state):
    buffer = io.BytesIO()
    save_state(state, buffer)
    buffer.seek(0)
    return load_state(buffer)


@pytest.mark.parametrize(
    "task, env_kwargs, total, stop, eval_every",
    [
        ("point-reach", {}, 240, 120, 60),
        # dm_control, stopped mid-episode (episodes of 40 steps, stop at 60): physics state restored exactly.
        ("cartpole-swingup", {"episode_steps": 40}, 100, 60, 20),
    ],
)
def test_resume_from_state_matches_uninterrupted(task, env_kwargs, total, stop, eval_every):
    if task != "point-reach":
        pytest.importorskip("dm_control")
    config = SACConfig(method="mmrex", anneal_iters=80, penalty_weight=5.0, random_steps=50, seed=3, **SMALL)
    env_config = EnvConfig(task=task, **env_kwargs)
    seen = []
    uninterrupted = Trainer(config, env_config, eval_episodes=2)
    whole = uninterrupted.run(total, eval_every, on_eval=lambda *args: seen.append(args))
    assert len(seen) == len(whole) == total // eval_every

    first = Trainer(config, env_config, eval_episodes=2)
    first.run(stop, eval_every)
    state = _roundtrip(first.state_dict())
    del first
    resumed = Trainer(config, env_config, eval_episodes=2, state=state)
    seen_after = []
    evaluations = resumed.run(total, eval_every, on_eval=lambda *args: seen_after.append(args))
    assert len(evaluations) == len(whole)
    assert evaluations == whole  # identical returns and losses
    assert [s[0] for s in seen_after] == list(range(stop + eval_every, total + 1, eval_every))

    for name, net in resumed.agent.nets.items():
        for p, q in zip(net.parameters(), uninterrupted.agent.nets[name].parameters()):
            assert torch.equal(p, q), name


def test_state_from_another_configuration_is_refused():
    config = SACConfig(random_steps=10, **SMALL)
    trainer = Trainer(config, EnvConfig(task="point-reach"), eval_episodes=1)
    trainer.run(20, 20)
    with pytest.raises(ValueError, match="another configuration"):
        Trainer(SACConfig(random_steps=11, **SMALL), EnvConfig(task="point-reach"), state=trainer.state_dict())


# --- the REx RL code's choices (reinforcement_learning_with_spurious_correlations) ----------------------------


def test_observation_layouts_table_is_dm_controls(dm_control):
    """The static table the pipeline checks settings against is what the tasks report (keys, sizes, order)."""
    from core.rl.envs import DMCEnv, PointReach
    from core.rl.layouts import LAYOUTS

    for task, layout in LAYOUTS.items():
        env = PointReach() if task == "point-reach" else DMCEnv(task)
        assert tuple(env.layout) == layout, task


def test_k_zero_is_the_plain_task(dm_control):
    """k = 0: no spurious copy and no noise, the observation is the clean state."""
    env = make_env("cartpole-swingup", 3.0, k=0, noise=0.5, seed=0)
    assert env.observation_space.shape == (5,) and env.copied == []
    obs, info = env.reset()
    for _ in range(20):
        np.testing.assert_allclose(obs, info["state"], rtol=1e-6, atol=1e-7)
        obs, *_, info = env.step(np.ones(1, np.float32))


def test_default_penalty_is_the_reference_weight_one_after_anneal_20000():
    """rrex.yaml / run_cluster.sh: penalty_weight 1, ANNEAL_ITERS 20000; with weight 1 the rescale rule changes nothing."""
    config = SACConfig(method="mmrex")
    risks = torch.tensor([0.3, 0.7])
    for step in (0, 19_999, 20_000, 10**6):
        loss, penalty = reward_objective(config, risks, None, step)
        assert penalty.item() == pytest.approx(0.4)  # the REx RL code's |R1 - R2|
        assert loss.item() == pytest.approx(0.5 + 0.4)  # mean risk + 1 x penalty, never divided
    heavy = SACConfig(method="mmrex", penalty_weight=1000.0)
    assert reward_objective(heavy, risks, None, 19_999)[0].item() == pytest.approx(0.9)  # weight 1 before the anneal step
    # From it on the REx code divides the whole loss by a weight above 1: (0.5 + 1000 x 0.4) / 1000.
    assert reward_objective(heavy, risks, None, 20_000)[0].item() == pytest.approx(0.5 / 1000 + 0.4)


def _recording_trainer(task="point-reach", factors=(1.0, 2.0), **overrides):
    config = SACConfig(method="mmrex", random_steps=10, seed=0, **{**SMALL, **overrides})
    trainer = Trainer(config, EnvConfig(task=task, train_factors=factors), eval_episodes=1)
    calls = []
    update = trainer.agent.update
    trainer.agent.update = lambda batches, step: calls.append((step, len(batches))) or update(batches, step)
    return trainer, calls


def test_two_updates_per_lockstep_each_from_every_domain():
    """The REx code's train.py calls agent.update inside its loop over the training envs; each update samples all envs."""
    trainer, calls = _recording_trainer()
    trainer.run(15, eval_every=15)
    steps = [step for step, _ in calls]
    assert steps == [s for s in range(11, 16) for _ in range(2)]  # two per lock-step after the warm-up
    assert {n for _, n in calls} == {2}
    trainer, calls = _recording_trainer(factors=(1.0, 2.0, 3.0))
    trainer.run(12, eval_every=12)
    assert [step for step, _ in calls] == [11, 11, 11, 12, 12, 12]


def test_critic_and_actor_train_on_every_transition_of_the_sequences():
    """agent/sac.py reshapes obs.view(-1, ...): all seq_len x batch transitions of each domain reach the critic."""
    config = SACConfig(seq_len=3, **SMALL)
    agent = Agent(config, obs_dim=4, act_dim=1)
    rng = np.random.default_rng(0)
    batches = [{"obs": rng.normal(size=(8, 3, 4)).astype(np.float32), "next_obs": rng.normal(size=(8, 3, 4)).astype(np.float32),
                "action": rng.uniform(-1, 1, (8, 3, 1)).astype(np.float32), "reward": rng.random((8, 3)).astype(np.float32),
                "terminated": np.zeros((8, 3), np.float32)} for _ in range(2)]
    seen = []
    agent.critic.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1].detach().clone()))
    agent.update(batches, step=1)
    critic_actions = seen[0]  # the critic step; the actor step follows on the same transitions
    everything = np.concatenate([b["action"].reshape(-1, 1) for b in batches])
    assert critic_actions.shape == (2 * 8 * 3, 1)
    np.testing.assert_array_equal(np.sort(critic_actions.numpy(), axis=0), np.sort(everything, axis=0))
    assert seen[-1].shape[0] == 2 * 8 * 3  # the actor's batch


def test_replay_capacity_is_split_across_the_training_domains():
    """replay_buffer.py: MultiEnvReplayBuffer gives each env capacity / num_envs (1e6 in all)."""
    assert SACConfig().buffer_capacity == 1_000_000
    trainer = Trainer(SACConfig(**{**SMALL, "buffer_capacity": 1000}), EnvConfig(task="point-reach"), eval_episodes=1)
    assert [b.capacity for b in trainer.buffers] == [500, 500]


def _real_entries(trainer):
    return [b.obs[: len(b), :-2] for b in trainer.buffers]  # point-reach: position (clean); target noisy; the copy


@pytest.mark.parametrize("seeding", ["shared", "per_domain"])
def test_shared_seed_gives_every_domain_the_same_starts_and_warmup_actions(seeding):
    """utils.py seeds every env and action space with cfg.seed: identical initial states and random actions per domain."""
    config = SACConfig(random_steps=60, seed=4, seeding=seeding, **SMALL)
    trainer = Trainer(config, EnvConfig(task="point-reach"), eval_episodes=1)
    trainer.run(50, eval_every=50)
    a, b = trainer.buffers
    same = seeding == "shared"
    assert np.array_equal(a.action[:50], b.action[:50]) == same
    assert np.array_equal(a.obs[:50, 0], b.obs[:50, 0]) == same  # the position: same starts, same moves
    assert not np.array_equal(a.obs[:50, 1], b.obs[:50, 1])  # the observation noise is each domain's own
    fresh = Trainer(config, EnvConfig(task="point-reach"), eval_episodes=1)
    first, *others = [env.reset()[1]["state"] for env in (*fresh.envs, *fresh.eval_envs.values())]
    assert [np.array_equal(first, other) for other in others] == [same] * 3  # the other training env and both eval envs


def test_shared_seed_starts_dm_control_domains_alike(dm_control):
    def starts(seeding):
        trainer = Trainer(SACConfig(seeding=seeding, **SMALL), EnvConfig(task="cartpole-swingup", episode_steps=5), eval_episodes=1)
        return [env.reset()[1]["state"] for env in (*trainer.envs, *trainer.eval_envs.values())]

    shared, apart = starts("shared"), starts("per_domain")
    assert all(np.array_equal(s, shared[0]) for s in shared)
    assert not any(np.array_equal(s, apart[0]) for s in apart[1:])


def test_every_update_steps_every_network_and_leaves_the_critic_trainable():
    """The actor step turns the critic's weight gradients off for its backward pass: they must come back on."""
    agent = Agent(SACConfig(seq_len=3, **SMALL), obs_dim=4, act_dim=1)
    rng = np.random.default_rng(1)
    batch = {"obs": rng.normal(size=(8, 3, 4)).astype(np.float32), "next_obs": rng.normal(size=(8, 3, 4)).astype(np.float32),
             "action": rng.uniform(-1, 1, (8, 3, 1)).astype(np.float32), "reward": rng.random((8, 3)).astype(np.float32),
             "terminated": np.zeros((8, 3), np.float32)}
    for step in (1, 2):
        before = {name: [p.detach().clone() for p in net.parameters()] for name, net in agent.nets.items()}
        agent.update([batch], step=step)
        for name, net in agent.nets.items():
            moved = any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[name]))
            assert moved == (not name.startswith("target") or step % 2 == 0), (name, step)
        assert all(p.requires_grad for p in agent.critic.parameters())


def test_model_lr_zero_freezes_the_reward_model_and_encoder_l1_is_the_critics_term():
    """learn preset's plain SAC: model_lr 0 leaves dynamics and reward head untouched (the encoder moves by the critic
    alone, as with a model step that adds nothing); encoder_l1 adds exactly its weight x the encoder weights' L1 norm."""
    rng = np.random.default_rng(2)
    batch = {"obs": rng.normal(size=(8, 3, 4)).astype(np.float32), "next_obs": rng.normal(size=(8, 3, 4)).astype(np.float32),
             "action": rng.uniform(-1, 1, (8, 3, 1)).astype(np.float32), "reward": rng.random((8, 3)).astype(np.float32),
             "terminated": np.zeros((8, 3), np.float32)}
    frozen = Agent(SACConfig(seq_len=3, **{**SMALL, "model_lr": 0.0}), obs_dim=4, act_dim=1)
    trained = Agent(SACConfig(seq_len=3, **SMALL), obs_dim=4, act_dim=1)
    before = {name: [p.detach().clone() for p in getattr(frozen, name).parameters()] for name in ("dynamics", "reward_head")}
    losses = frozen.update([batch], step=1)
    for name, params in before.items():
        assert all(torch.equal(p, q) for p, q in zip(getattr(frozen, name).parameters(), params)), name
    assert losses["reward_loss"].item() > 0  # still reported
    assert not torch.equal(frozen.encoder[0].weight, trained.encoder[0].weight)  # the critic moved the encoder
    trained.update([batch], step=1)
    assert all(not torch.equal(p, q) for p, q in zip(trained.reward_head.parameters(), before["reward_head"]))

    # Same initial weights (same seed), same batch, no model step before the critic's: the critic losses differ by
    # the L1 term only.
    no_l1 = Agent(SACConfig(seq_len=3, **{**SMALL, "model_lr": 0.0, "encoder_l1": 0.0}), obs_dim=4, act_dim=1)
    with_l1 = Agent(SACConfig(seq_len=3, **{**SMALL, "model_lr": 0.0, "encoder_l1": 0.5}), obs_dim=4, act_dim=1)
    l1 = sum(p.abs().sum().item() for name, p in with_l1.encoder.named_parameters() if name.endswith("weight"))
    gap = with_l1.update([batch], step=1)["critic_loss"].item() - no_l1.update([batch], step=1)["critic_loss"].item()
    assert gap == pytest.approx(0.5 * l1, rel=1e-4)


def test_training_on_cpu_flushes_denormals():
    """Adam's moments of dead units decay into denormals, whose arithmetic ran the update ~4x slower: the trainer
    turns on flush-to-zero while it trains (a denormal then reads as 0 in arithmetic) and restores the mode after."""
    from core.rl.sac import flushing_denormals

    torch.set_flush_denormal(False)
    assert (torch.tensor([1e-40]) * 1.0).item() != 0.0 and not flushing_denormals()
    seen = []
    trainer = Trainer(SACConfig(random_steps=5, **SMALL), EnvConfig(task="point-reach"), eval_episodes=1)
    trainer.run(6, eval_every=6, on_eval=lambda *args: seen.append((torch.tensor([1e-40]) * 1.0).item()))
    assert seen == [0.0]
    assert not flushing_denormals()  # restored
