"""The RL study's published values live here (the registry rule: each core part's in ``core/<part>/hparams.py``).

SACConfig's defaults, the rl-spurious settings, presets and report read these;
nothing else writes a published value down. ``AGENT``: the REx authors'
released RL code (``reinforcement_learning_with_spurious_correlations``, a
pytorch_sac fork: ``config/agent/*.yaml``, ``run_cluster.sh``, ``agent/sac.py``,
``train.py``, ``replay_buffer.py``; hyperparameters in ``docs/experiments.md``).
``DOMAINS``: the spurious-feature domains and ``RUNS``: the thesis's runs
(§5.4: tuned on cartpole swingup, run on finger spin and walker walk).
"""
from __future__ import annotations

from typing import Any

AGENT: dict[str, Any] = dict(
    penalty_weight=1.0,  # config/agent/rrex.yaml and run_cluster.sh (PENALTY in 1)
    anneal_iters=20_000,  # the runs (run_cluster.sh: ANNEAL_ITERS in 20000; rrex.yaml says 10000)
    reduction="mean",  # the RL code averages the domain risks: torch.stack(decoder_loss).mean()
    irm_reduction="mean",  # ... and the per-domain IRM penalties
    gamma=0.99,  # SAC (pytorch_sac's config/agent/sac.yaml, as the fork keeps it)
    init_temperature=0.1,
    actor_lr=1e-5,
    critic_lr=1e-5,
    alpha_lr=1e-4,
    tau=0.005,  # Polyak averaging of the target encoder and critic ...
    target_update_every=2,  # ... every 2 updates
    actor_update_every=1,
    log_std_min=-5.0,  # the actor's log-std squashed into [-5, 2]
    log_std_max=2.0,
    hidden=1024,  # actor and critic: 2 hidden layers of this width
    encoder_hidden=512,  # state encoder obs -> 512 -> 512 -> feature_dim
    feature_dim=50,
    encoder_l1=1e-5,  # x the L1 norm of the encoder weights, in the critic loss
    model_hidden=200,  # latent dynamics and reward head: 2 hidden layers of this width
    model_lr=1e-4,  # reward model (dynamics, reward head, encoder), Adam
    model_weight_decay=1e-5,
    seq_len=3,  # stored steps per sampled sequence
    batch_size=256,  # sequences per training domain and update
    critic_seq=3,  # the critic / actor see all seq_len transitions of each sequence (agent/sac.py)
    updates_per_step=0,  # 0: one update per training domain and lock-step (train.py's loop)
    random_steps=5000,  # uniform random actions first
    buffer_capacity=1_000_000,  # in all, split evenly across the training domains (replay_buffer.py)
    seeding="shared",  # every env and the warm-up actions from one seed (utils.py)
)
DOMAINS: dict[str, Any] = dict(
    train_factors=(1.0, 2.0),  # spurious factors of the two training domains
    test_factor=3.0,  # ... and of the test domain
    k=1,  # state entries copied as the spurious feature
    noise=0.01,  # std of the Gaussian noise on the real copied entries
)
RUNS: dict[str, Any] = dict(
    tune_task="cartpole-swingup",  # the task the penalty weight and anneal step are tuned on
    tune_samples=20,  # configurations per penalized method
    tasks=("finger-spin", "walker-walk"),  # run with the tuned values
    seeds=10,
    total_steps=1_000_000,  # env steps per training domain
    eval_every=10_000,
    episode_steps=1000,  # dm_control's episodes
    eval_episodes=10,  # deterministic episodes per evaluation and domain
)
