"""Deliberate mistakes in the BHN evaluation pieces (issue 31: core/bhn/{ood,active,adversarial,data,toy}.py): make each
in this checkout, run the tests that must catch it, revert. Not collected by pytest; run it on a clean checkout (it
edits files while it runs and restores them):

    python tests/mutations_bhn_eval.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed. Each entry names what the reference does that the
mistake breaks (dk_anomaly_detection.py get_results and score functions, H&G MNIST_Softmax_Stats.ipynb; dk_AL.py,
AL_helpers.py; FGS_eval.py fgm_grad2; toy_examples/hypernet_trainer.py, mlp_hmc.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

EV, TY = "tests/test_bhn_eval.py", "tests/test_bhn_toy.py"
OOD, AC, ADV, DA, TO = "core/bhn/ood.py", "core/bhn/active.py", "core/bhn/adversarial.py", "core/bhn/data.py", "core/bhn/toy.py"
TR = "core/bhn/train.py"
M = [
 # ---- metrics (get_results: AUROC in-positive; AUPR-in; AUPR-out OOD-positive on the negated score) ----
 ("e1 AUROC sign convention flipped (OOD positive on the confidence)", OOD,
  '"auroc": 100 * auroc(is_in, scores),', '"auroc": 100 * auroc(~is_in, scores),', [EV]),
 ("e2 AUPR-out without negating the score", OOD,
  '"aupr_out": 100 * average_precision(~is_in, -scores)}', '"aupr_out": 100 * average_precision(~is_in, scores)}', [EV]),
 ("e3 average precision ignores ties (one threshold per input)", OOD,
  "last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]", "last = np.arange(len(s))", [EV]),
 ("e4 AUROC by strict pairs (ties count 0, not 1/2)", OOD,
  "ranks = rankdata(scores)  #", "ranks = rankdata(scores, method='min')  #", [EV]),
 # ---- scores (dk_anomaly_detection.py / acquisition_functions.py) ----
 ("e5 BALD without the expected-entropy term", OOD,
  "return entropy(probs.mean(0), base) - entropy(probs, base).mean(0)", "return entropy(probs.mean(0), base)", [EV]),
 ("e6 entropy confidence not negated (the reference's max_ent slip)", OOD,
  "        return -predictive_entropy(probs)", "        return predictive_entropy(probs)", [EV]),
 ("e7 mean std as the std of the mean over classes", OOD,
  "return var.sqrt().mean(-1)", "return probs.mean(0).std(-1, unbiased=False)", [EV]),
 ("e8 variation ratio from the mean predictive, not the votes", OOD,
  "return 1 - votes.max(-1).values.to(probs.dtype) / probs.shape[0]", "return 1 - probs.mean(0).max(-1).values", [EV]),
 ("e9 error detection with the wrong inputs as positive", OOD,
  "return detection(conf[correct], conf[~correct])", "return detection(conf[~correct], conf[correct])", [EV]),
 # ---- active learning (dk_AL.py, AL_helpers.py) ----
 ("e10 acquired points left in the pool under remove", AC,
  "pool = np.delete(state.pool, positions[best])", "pool = state.pool", [EV]),
 ("e11 reference semantics without re-appending the scored subset", AC,
  "pool = np.concatenate([state.pool, scored])", "pool = np.delete(state.pool, positions[best])", [EV]),
 ("e12 the lowest values acquired", AC,
  'return np.argsort(np.asarray(values), kind="stable")[-k:][::-1]', 'return np.argsort(np.asarray(values), kind="stable")[:k]', [EV]),
 ("e13 initial set: the last two of each class", AC, "of_c = candidates[labels[candidates] == c][:per_class]",
  "of_c = candidates[labels[candidates] == c][-per_class:]", [EV]),
 ("e14 BALD acquisition in nats (dk_AL uses log2)", AC,
  'return ood.mutual_information(probs, base=2)', 'return ood.mutual_information(probs)', [EV]),
 ("e15 candidate set not shuffled", AC, "order = np.random.default_rng(seed).permutation(n)", "order = np.arange(n)", [EV]),
 # ---- FGS (FGS_eval.py fgm_grad2: CE of the averaged predictive) ----
 ("e16 FGS gradient on one MC sample", ADV, "    mean = probs.mean(0)\n", "    mean = probs[0]\n", [EV]),
 ("e17 FGS on the mean of per-sample cross-entropies", ADV,
  "    mean = probs.mean(0)\n    return -torch.log(mean.gather(-1, y.view(-1, 1)).squeeze(-1)).mean()",
  "    return -torch.log(probs.gather(-1, y.view(1, -1, 1).expand(len(probs), -1, 1)).squeeze(-1)).mean()", [EV]),
 ("e18 FGS step against the gradient", ADV, "parts = [xc + eps * fgs_direction(", "parts = [xc - eps * fgs_direction(", [EV]),
 # ---- data (split_by_exclude; noised(); H&G noise) ----
 ("e19b the paper split reads the training split alone (no test split after it)", DA,
  "    source = load_source(None) if data_dir is None else load_idx_merged(data_dir)", "    source = load_source(data_dir)", [EV]),
 ("e19 wrong held-out class (the next one)", DA, "kept = [p[y[p] != exclude] for p in parts]",
  "kept = [p[y[p] != (exclude + 1) % CLASSES] for p in parts]", [EV]),
 ("e20 held-out images from the test part", DA, "heldout = parts[0][y[parts[0]] == exclude]",
  "heldout = parts[2][y[parts[2]] == exclude]", [EV]),
 ("e21 Gaussian noise clipped to [0, 1]", DA, "return rng.standard_normal((n, PIXELS), dtype=np.float32)",
  "return np.clip(rng.standard_normal((n, PIXELS), dtype=np.float32), 0, 1)", [EV]),
 ("e22 a fresh pixel permutation per image", DA, "return split.x_test[:, rng.permutation(PIXELS)]",
  "return np.stack([row[rng.permutation(PIXELS)] for row in split.x_test])", [EV]),
 # ---- toys (hypernet_trainer.simple_test, mlp_hmc.prod_net_pred) ----
 ("e23 closed-form covariance without the prior", TO,
  "cov = torch.linalg.inv(x.T @ x + torch.eye(x.shape[1], dtype=x.dtype))", "cov = torch.linalg.inv(x.T @ x)", [TY + "::test_closed_form_is_the_posterior"]),
 ("e24 KL(q||p) without log Z", TO, "return float((log_q.to(torch.float64) - log_joint(problem, theta)).mean() + log_z)",
  "return float((log_q.to(torch.float64) - log_joint(problem, theta)).mean())", [TY + "::test_kl_from_samples"]),
 ("e25 product net's likelihood without the cross term's b", TO, "ab = theta[:, 0] * theta[:, 1]", "ab = theta[:, 0]", [TY + "::test_likelihoods_are_gaussian_log_densities"]),
 ("e26 grid evidence without the cell area", TO, "log_z = float(torch.logsumexp(lp, 0)) + math.log(step * step)",
  "log_z = float(torch.logsumexp(lp, 0))", [TY + "::test_grid_posterior_on_a_gaussian"]),
 # ---- tempering (AVO, Huang et al. 2018) and the init scale: departures from hypernet_trainer.py, off by default ----
 ("e27 likelihood weight restarts in every lr phase", TO, "bt.likelihood_weight(t + done, temper * steps)",
  "bt.likelihood_weight(t, temper * steps)", [TY + "::test_likelihood_weight_schedule"]),
 ("e28 likelihood weight rises from 0, not 1e-3", TR, "return min(1.0, start + step / ramp)", "return min(1.0, step / ramp)",
  [TY + "::test_likelihood_weight_schedule"]),
 ("e29 likelihood weight computed but not applied", TR, "log_p = log_p + v * log_likelihood(theta)",
  "log_p = log_p + log_likelihood(theta)", [TY + "::test_tempered_fit_reaches_the_prior_at_small_weight"]),
 ("e30 the tempered target without the prior", TO, "part = bt.fit_hypernet(hnet, log_prior, n,",
  "part = bt.fit_hypernet(hnet, lambda th: 0 * log_prior(th), n,", [TY + "::test_tempered_fit_reaches_the_prior_at_small_weight"]),
 ("e31 tempering on by default", TO, "decay: bool = True, temper: float = 0.0,", "decay: bool = True, temper: float = 0.4,",
  [TY + "::test_tempering_off_is_the_old_fit"]),
 ("e32 init scale moved by default", TO, "init_log_scale: float | None = None) -> ToyFit:",
  "init_log_scale: float | None = 0.0) -> ToyFit:", [TY + "::test_tempering_off_is_the_old_fit"]),
 ("e33 init scale filled, the reference's jitter lost", TO,
  "hnet.linear[0].add_(float(init_log_scale) - REFERENCE_LOG_SCALE)", "hnet.linear[0].fill_(float(init_log_scale))",
  [TY + "::test_init_log_scale_moves_the_linear_layer"]),
 ("e34 the trainable drops init_log_scale", "tasks/bhn.py",
  'init_log_scale=float(c["init_log_scale"]) if "init_log_scale" in c else None)', "init_log_scale=None)",
  [TY + "::test_pipeline_passes_the_departures_only_when_set"]),
 ("e35 temper enters every config (recorded ids change)", "pipelines/bhn/toy.py",
  "if k in settings and float(settings[k]) != off}", "if k in settings}",
  [TY + "::test_pipeline_passes_the_departures_only_when_set"]),
]

if __name__ == "__main__":
    main(M)
