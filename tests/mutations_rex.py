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
T = "tests/test_rex_vs_irm.py"
X = "pipelines/rex/rex_vs_irm.py"
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
 # rex-vs-irm's cpu preset and report (issue 32)
 ("x1 searches not paired: each method of a (variant, p) draws its own configurations", X,
  'paired_by=("variant", "shift_p"),', 'paired_by=("variant", "shift_p", "method"),', [T + "::test_cpu_preset_searches_are_paired"]),
 ("x2 the random sampler off by default: TPE per study", X,
  '"sampler": Setting("random",', '"sampler": Setting("tpe",', [T + "::test_cpu_preset_searches_are_paired"]),
 ("x3 colour searched at p 0.1, not the thesis's 0.2", "core/cmnist/hparams.py",
  '"color": (0.2, 2.0)}', '"color": (0.1, 2.0)}', [T + "::test_cpu_preset_covers_both_claims_at_its_sizes"]),
 ("x4 search_at small ignored by the search", X,
  'if stage == "search" and settings.get("search_at") == "small":', 'if stage == "fixed" and settings.get("search_at") == "small":',
  [T + "::test_cpu_preset_covers_both_claims_at_its_sizes"]),
 ("x5 cpu preset with the thesis's 3 restarts, fewer than 5", X, "restarts=5, search_at=", "restarts=3, search_at=",
  [T + "::test_cpu_preset_covers_both_claims_at_its_sizes"]),
 ("x6 chance threshold 45%, not 50%", X, "CHANCE = 0.5 ", "CHANCE = 0.45 ", [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x7 a test accuracy of exactly 50% counted as beating chance (>=)", X,
  'above = (runs["test_acc"] > CHANCE)', 'above = (runs["test_acc"] >= CHANCE)', [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x8 Wilson centre with z^2 / n, not z^2 / 2n", X, "centre = (share + z * z / (2 * n)) / scale",
  "centre = (share + z * z / n) / scale", [T + "::test_wilson_interval_is_scipys", T + "::test_wilson_interval_by_hand"]),
 ("x9 Wilson half-width without the z^2 / 4n^2 term", X, "share * (1 - share) / n + z * z / (4 * n * n)",
  "share * (1 - share) / n", [T + "::test_wilson_interval_is_scipys", T + "::test_wilson_interval_by_hand"]),
 ("x10 collapsed when any domain's NLL is ln 2, not every domain's", X, "<= COLLAPSE_NLL).all(axis=1)",
  "<= COLLAPSE_NLL).any(axis=1)", [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x11 against colour read off the test accuracy, not the training accuracy", X, 'against = (runs["train_acc"] < CHANCE)',
  'against = (runs["test_acc"] < CHANCE)', [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x15 following colour counted below chance, not below 40%", X, '(runs["test_acc"] < FOLLOWS_COLOR)',
  '(runs["test_acc"] < CHANCE)', [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x16 the against-colour winners kept among the non-degenerate ones", X, "above & ~flat & ~against", "above & ~flat",
  [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x12 the selected configuration by test accuracy, not min(train, test)", X,
  'best = runs.sort_values(["min_acc", "trial_key"], ascending=[False, True]).iloc[0]\n                cell',
  'best = runs.sort_values(["test_acc", "trial_key"], ascending=[False, True]).iloc[0]\n                cell',
  [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x13 the thesis's REx share set beside MM-REx", X, '"vrex": f"{share:.1f}% (REx)"', '"mmrex": f"{share:.1f}% (REx)"',
  [T + "::test_report_shares_equal_the_rows_counts"]),
 ("x14 V-REx - IRM differences unpaired: restarts shuffled", X,
  'gap = 100 * (group["vrex"] - group["irm"])', 'gap = 100 * (group["vrex"].to_numpy()[::-1] - group["irm"].to_numpy())',
  [T + "::test_figure_5_4_pairs_restarts_and_says_the_thesis_gives_no_numbers"]),
 ("r1 rl tuned values: ASHA's all-stopped fallback decided over every method at once, not per method",
  "pipelines/rex/rl_spurious.py", '    for _, rows in tune_rows.groupby("method", sort=True):', "    for _, rows in [(None, tune_rows)]:",
  ["tests/test_rl_pipeline.py::test_tuned_values_fall_back_to_all_rows_per_method_when_asha_stopped_every_one_of_them"]),
 ("x17 the Wilson interval's ends left to floating point at k = 0 and k = n", X,
  "return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))",
  "return max(0.0, centre - half), min(1.0, centre + half)",
  [T + "::test_wilson_interval_by_hand", T + "::test_report_draws_shares_of_none_and_all"]),
]
if __name__ == "__main__":
    main(M)
