"""Each study's published values, read where the runs get them (resolved presets, stage configs, dataclass defaults,
Optuna distributions), against the reference's numbers with their citations.

The registries (``core/<part>/hparams.py``) are the only place a published value is written down; these tests read
the pipelines' resolved output, so a change to a registry alone shows up here (tests/mutations_rex.py,
mutations_domainbed.py and mutations_memorization.py make such changes on purpose).
"""
from __future__ import annotations

import pytest

from pipelines.engine.spec import resolve_settings


def _configs(pipeline, preset: str) -> list[dict]:
    settings = resolve_settings(pipeline, preset, [])
    return [c for stage in pipeline.stages(settings) for c in stage.plan.configs]


def test_cmnist_table_paper_runs_irm_codes_published_command():
    """IRM code (facebookresearch/InvariantRiskMinimization, code/colored_mnist/README.md): ``python -u main.py
    --hidden_dim=390 --l2_regularizer_weight=0.00110794568 --lr=0.0004898536566546834 --n_restarts=10
    --penalty_anneal_iters=190 --penalty_weight=91257.18613115903 --steps=501``; thesis Table 5.1: V-REx, MM-REx
    and RI use IRM's values."""
    from pipelines.rex import cmnist_table

    configs = _configs(cmnist_table.PIPELINE, "paper")
    for method in ("irm", "vrex", "mmrex", "ri"):
        runs = [c for c in configs if c["method"] == method]
        assert len(runs) == 10, method
        for c in runs:
            assert (c["hidden"], c["l2"], c["lr"], c["anneal_iters"], c["penalty_weight"], c["steps"]) == (
                390, 0.00110794568, 0.0004898536566546834, 190, 91257.18613115903, 501), method


def test_cmnist_model_defaults_and_search_budget_are_the_published_ones():
    """core.cmnist.train.ModelConfig defaults to IRM's command above; the thesis's random searches draw 340
    configurations, 501 steps each (cmnist-search and rex-vs-irm paper presets); Figure 5.4's shifts p = 0, 0.1, ..., 0.5."""
    from core.cmnist.train import ModelConfig
    from pipelines.rex import cmnist_search, rex_vs_irm

    assert (ModelConfig().hidden, ModelConfig().lr, ModelConfig().penalty_weight) == (390, 0.0004898536566546834, 91257.18613115903)
    for pipeline in (cmnist_search.PIPELINE, rex_vs_irm.PIPELINE):
        settings = resolve_settings(pipeline, "paper", [])
        assert (settings["num_samples"], settings["steps"]) == (340, 501), pipeline.name
    assert resolve_settings(rex_vs_irm.PIPELINE, "paper", [])["ps"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_toy_sem_paper_is_the_irm_codes_synthetic_experiment():
    """IRM code, code/experiment_synthetic/main.py: ``--dim 10 --n_samples 1000 --n_reps 10 --n_iterations 100000
    --lr 1e-3``; models.py's InvariantRiskMinimization tries ``reg in [0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]``."""
    from core.sem.train import REFERENCE_REGS, SolverConfig
    from pipelines.rex import toy_sem

    settings = resolve_settings(toy_sem.PIPELINE, "paper", [])
    assert (settings["dim"], settings["n_samples"], settings["repetitions"], settings["steps"], settings["lr"]) == (
        10, 1000, 10, 100_000, 1e-3)
    assert {(c["steps"], c["lr"], c["dim"], c["n_samples"]) for c in _configs(toy_sem.PIPELINE, "paper")} == {(100_000, 1e-3, 10, 1000)}
    assert (SolverConfig().steps, SolverConfig().lr) == (100_000, 1e-3)
    assert REFERENCE_REGS == (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


# The REx authors' RL code (reinforcement_learning_with_spurious_correlations, docs/experiments.md, config/agent/*.yaml,
# run_cluster.sh): 2 x 1024 actor and critic, encoder 512 -> 50, actor and critic lr 1e-5, temperature lr 1e-4,
# reward model lr 1e-4 (weight decay 1e-5), encoder L1 1e-5, 256 sequences of 3 steps per domain, 5,000 random
# steps, penalty weight 1 after 20,000 steps; thesis §5.4: tuned on cartpole swingup, 10 seeds of finger spin and
# walker walk, 1e6 steps.
RL_PAPER = dict(hidden=1024, encoder_hidden=512, actor_lr=1e-5, critic_lr=1e-5, alpha_lr=1e-4, model_lr=1e-4,
                encoder_l1=1e-5, batch_size=256, critic_seq=3, random_steps=5000)


def test_rl_paper_runs_and_sac_defaults_are_the_rex_rl_codes():
    from core.rl.sac import SACConfig
    from pipelines.rex import rl_spurious

    settings = resolve_settings(rl_spurious.PIPELINE, "paper", [])
    runs = rl_spurious.runs_grid(settings, {}).configs
    assert {(c["task"], c["seed"]) for c in runs} == {(t, s) for t in ("finger-spin", "walker-walk") for s in range(10)}
    for c in runs:
        assert {k: c[k] for k in RL_PAPER} == RL_PAPER
        assert (c["penalty_weight"], c["anneal_iters"], c["total_steps"], c["episode_steps"]) == (1.0, 20_000, 1_000_000, 1000)
    (tune, _) = rl_spurious.PIPELINE.stages(settings)
    assert {s["task"] for s in tune.plan.studies} == {"cartpole-swingup"} and tune.plan.budget == 20
    sac = SACConfig()
    assert {k: getattr(sac, k) for k in RL_PAPER} == RL_PAPER
    assert (sac.penalty_weight, sac.anneal_iters, sac.seq_len, sac.feature_dim, sac.model_weight_decay) == (1.0, 20_000, 3, 50, 1e-5)
    assert rl_spurious.PAPER_AGENT == {k: RL_PAPER[k] for k in rl_spurious.PAPER_AGENT}


def test_rl_domains_are_the_thesis_spurious_factors():
    """Thesis §5.4: training domains with spurious factors 1 and 2, test domain 3."""
    from pipelines.rex import rl_spurious

    settings = resolve_settings(rl_spurious.PIPELINE, "paper", [])
    assert (settings["train_factors"], settings["test_factor"]) == ([1.0, 2.0], 3.0)
    pytest.importorskip("gymnasium")
    from core.rl.envs import EnvConfig

    assert (EnvConfig().train_factors, EnvConfig().test_factor) == ((1.0, 2.0), 3.0)


def test_domainbed_optuna_distributions_are_hparams_registry_ranges():
    """DomainBed's hparams_registry.py (SMALL_IMAGES): lr 10^U(-4.5, -2.5), batch_size int(2^U(3, 9)), irm_lambda and
    vrex_lambda 10^U(-1, 5), *_penalty_anneal_iters int(10^U(0, 4)), groupdro_eta 10^U(-3, -1). The distributions
    the pipeline records are built from the same table as the draws, and every draw lies inside them."""
    from pipelines.rex import domainbed

    settings = {**resolve_settings(domainbed.PIPELINE, "smoke", []), "max_batch_size": 0}  # DomainBed's batch sizes
    expected = {"lr": (10**-4.5, 10**-2.5), "batch_size": (8, 511), "irm_lambda": (0.1, 1e5), "vrex_lambda": (0.1, 1e5),
                "mmrex_lambda": (0.1, 1e5), "groupdro_eta": (1e-3, 1e-1), "irm_penalty_anneal_iters": (1, 9999),
                "vrex_penalty_anneal_iters": (1, 9999), "mmrex_penalty_anneal_iters": (1, 9999)}
    for method in ("erm", "irm", "groupdro", "vrex", "mmrex"):
        runs = domainbed.draws(dict(dataset="ColoredMNIST", method=method, trial_seed=0), {**settings, "n_hparams": 6})
        for run in runs:
            for name, dist in run["distributions"].items():
                if name == "test_envs":
                    continue
                assert (dist.low, dist.high, dist.log) == (*expected[name], True), (method, name)
                assert dist.low <= run["params"][name] <= dist.high, (method, name)
    first = domainbed.draws(dict(dataset="ColoredMNIST", method="irm", trial_seed=0), settings)[0]["params"]
    assert (first["lr"], first["batch_size"], first["irm_lambda"], first["irm_penalty_anneal_iters"]) == (1e-3, 64, 1e2, 500)  # hparams_seed 0: the defaults


def test_memorization_presets_follow_chapter_3():
    """Thesis §3.2: "the MLPs have 4096 hidden units per layer and are trained for 1000 epochs with SGD and learning
    rate 0.01. The CNNs [...] are trained using SGD with momentum 0.9 and learning rate of 0.01, scheduled to drop by
    half every 15 epochs." §3.3.1 (Fig 3.1): 100 runs of one epoch on 1,000 examples; Fig 3.3: 16 units. LASS
    reference code (xingjunm/dimensionality-driven-learning): lass_tf.py at most 100 iterations, stopped below 20 new
    critical points; callback_util.py 500 fresh CSR points per epoch."""
    from pipelines.memorization import csr, easy, regularizers, sensitivity

    for c in _configs(csr.PIPELINE, "paper"):
        assert (c["model"], c["width"], c["epochs"], c["optimizer"], c["lr"], c["momentum"], c["lr_step"]) == (
            "mlp", 4096, 1000, "sgd", 0.01, 0.0, 0)
        assert (c["lass_iters"], c["lass_min_new"], c["csr_examples"]) == (100, 20, 500)
    for c in _configs(regularizers.PIPELINE, "paper"):
        assert (c["model"], c["optimizer"], c["lr"], c["momentum"], c["lr_step"]) == ("cnn", "sgd", 0.01, 0.9, 15)
    for c in _configs(csr.PIPELINE, "cifar10"):
        assert (c["model"], c["lr"], c["momentum"], c["lr_step"]) == ("cnn", 0.01, 0.9, 15)
    easy_configs = _configs(easy.PIPELINE, "paper")
    assert {(c["width"], c["epochs"], c["lr"]) for c in easy_configs} == {(4096, 1, 0.01)}
    assert sorted({e["seed"] for c in easy_configs for e in c["block"]}) == list(range(100))
    assert resolve_settings(easy.PIPELINE, "paper", [])["n_train"] == 1000
    assert {(c["width"], c["lr"]) for c in _configs(sensitivity.PIPELINE, "paper")} == {(16, 0.01)}


def test_published_tables_are_defined_only_in_the_core_registries():
    """The registry rule, by source: a module-level ``*PUBLISHED* = `` outside ``core/<part>/hparams.py`` is a second home."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^[A-Z_]*PUBLISHED[A-Z_]*\s*(:[^=]*)?=", re.M)
    offenders = [str(path.relative_to(root)) for folder in ("core", "tasks", "pipelines", "benchmarks")
                 for path in sorted((root / folder).rglob("*.py"))
                 if pattern.search(path.read_text()) and not (path.parts[-3] == "core" and path.name == "hparams.py")]
    assert offenders == []
