"""Deliberate mistakes in the REx chapter's registries (issue 29: each study's published values in exactly one
registry, core/<part>/hparams.py): each changes ONLY a registry, and the tests that read the pipelines' resolved
presets, stage configs and dataclass defaults against the reference's numbers must catch it. Not collected by
pytest; run it on a clean checkout (it edits files while it runs and restores them):

    python tests/mutations_rex.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

R = "tests/test_registries.py"
M = [
 # Colored MNIST (IRM code's code/colored_mnist/README.md command)
 ("c1 IRM penalty weight a tenth, in the registry only", "core/cmnist/hparams.py",
  "anneal_iters=190, penalty_weight=91257.18613115903)", "anneal_iters=190, penalty_weight=9125.718613115903)",
  [R + "::test_cmnist_table_paper_runs_irm_codes_published_command"]),
 ("c2 searches of 300 configurations, in the registry only", "core/cmnist/hparams.py", "SEARCH_SAMPLES = 340", "SEARCH_SAMPLES = 300",
  [R + "::test_cmnist_model_defaults_and_search_budget_are_the_published_ones"]),
 # toy SEMs (IRM code's code/experiment_synthetic/main.py)
 ("s1 SEM solvers 10,000 Adam steps, in the registry only", "core/sem/hparams.py", "STEPS = 100_000", "STEPS = 10_000",
  [R + "::test_toy_sem_paper_is_the_irm_codes_synthetic_experiment"]),
 # RL (the REx RL code)
 ("r1 actor learning rate 1e-4, in the registry only", "core/rl/hparams.py", "    actor_lr=1e-5,", "    actor_lr=1e-4,",
  [R + "::test_rl_paper_runs_and_sac_defaults_are_the_rex_rl_codes"]),
 ("r2 test domain's spurious factor 2, in the registry only", "core/rl/hparams.py", "    test_factor=3.0,", "    test_factor=2.0,",
  [R + "::test_rl_domains_are_the_thesis_spurious_factors"]),
]
if __name__ == "__main__":
    main(M)
