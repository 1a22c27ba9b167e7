"""Deliberate mistakes in the BHN pipelines, trainables and ECE (issue 31, BHN-pipe's part: pipelines/bhn, tasks/bhn.py,
core/bhn/calibration.py): make each in this checkout, run the tests that must catch it, revert. Not collected by
pytest; run it on a clean checkout (it edits files while it runs and restores them):

    python tests/mutations_bhn_pipe.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake. The core's mistakes are in tests/mutations_bhn.py and tests/mutations_bhn_eval.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

P = "tests/test_bhn_pipelines.py"
CAL, TB = "core/bhn/calibration.py", "tasks/bhn.py"
CO, CL, OO, AC, TO = "pipelines/bhn/common.py", "pipelines/bhn/classify.py", "pipelines/bhn/ood.py", "pipelines/bhn/active.py", "pipelines/bhn/toy.py"
M = [
 # ---- ECE (Guo et al.: bins (lo, hi], weighted by their share of the points)
 ("p1 ECE bins closed on the left", CAL, "torch.ceil(confidence * bins).long() - 1", "torch.floor(confidence * bins).long()",
  [f"{P}::test_ece_bin_edges_are_closed_on_the_right"]),
 ("p2 ECE bins not weighted by their share", CAL, "total += count / n * (", "total += 1 / bins * (", [f"{P}::test_ece_by_hand"]),
 # ---- trainables
 ("p3 classify trains on the whole training part, not the first n", TB,
  'x, y = as_images(split.x_train[:n], size), torch.as_tensor(split.y_train[:n])',
  'x, y = as_images(split.x_train, size), torch.as_tensor(split.y_train)', [f"{P}::test_classify_uses_the_first_n_training_images"]),
 ("p4 test error from the accuracy, not 1 - accuracy", TB, '"test_err": 100 * (1 - acc)', '"test_err": 100 * acc',
  [f"{P}::test_classify_run_rows"]),
 ("p5 OOD detection with in and out swapped", TB,
  'row.update(ood.detection(ood.confidence(in_probs, score), ood.confidence(out_probs[name], score)))',
  'row.update(ood.detection(ood.confidence(out_probs[name], score), ood.confidence(in_probs, score)))',
  [f"{P}::test_ood_rows_score_the_in_distribution_set_as_positive"]),
 ("p6 map's var_ratio from its copies (always 0)", TB, 'if acquisition == "var_ratio" and model.spec.model == "map":',
  'if False:', [f"{P}::test_map_var_ratio_is_one_minus_max_softmax"]),
 ("p7 pool semantics ignored (always remove)", TB, 'int(config["subset"]), rng, str(config["pool"]))',
  'int(config["subset"]), rng, "remove")', [f"{P}::test_active_run_reference_pool_grows"]),
 ("p8 mean accuracy window includes < 100 labels", TB, "window = (labels >= 100) & (labels <= 500)", "window = labels <= 500",
  [f"{P}::test_curve_summary_by_hand"]),
 ("p9 labels-to-level takes the last crossing", TB, "float(labels[np.argmax(acc >= level)])",
  "float(labels[len(acc) - 1 - np.argmax((acc >= level)[::-1])])", [f"{P}::test_curve_summary_by_hand"]),
 ("p10 toy histogram rows = b", TB, "np.histogram2d(theta[:, 0], theta[:, 1]", "np.histogram2d(theta[:, 1], theta[:, 0]",
  [f"{P}::test_toy_histogram_rows_are_a"]),
 ("p11 14x14 by max pooling", TB, "torch.nn.functional.avg_pool2d(t[:, None], factor)", "torch.nn.functional.max_pool2d(t[:, None], factor)",
  [f"{P}::test_as_images_pools_to_14"]),
 # ---- declarations and refusals
 ("p12 map scored with BALD / mean std", OO, 'if model not in common.DETERMINISTIC or s in DETERMINISTIC_SCORES', 'if True',
  [f"{P}::test_ood_presets_and_blocks"]),
 ("p13 mean-field trained once per coupling", CO, 'for coupling in ([0] if posterior == "mean-field" else settings["coupling"]):',
  'for coupling in settings["coupling"]:', [f"{P}::test_classify_presets"]),
 ("p14 negative coupling accepted", CO, 'layer only, i.e. mean-field)", ge=0, item=int)', 'layer only, i.e. mean-field)", item=int)',
  [f"{P}::test_bad_settings"]),
 ("p15 held-out class 10 accepted", OO, '(reference: {DAN[\'exclude\']})", ge=0, le=9)', '(reference: {DAN[\'exclude\']})", ge=0)',
  [f"{P}::test_bad_settings"]),
 ("p16 acquisition larger than the subset accepted", AC, 'if settings["acquire"] > min(settings["subset"], pool):',
  'if settings["acquire"] > pool:', [f"{P}::test_bad_settings"]),
 ("p17 the pool's shrinking under remove ignored", AC,
  'last = pool - (settings["steps"] - 1) * settings["acquire"] if settings["pool"] == "remove" else pool', 'last = pool',
  [f"{P}::test_bad_settings"]),
 ("p18 map given BALD in active learning", AC, 'if not (v["model"] in common.DETERMINISTIC and a in NEEDS_SAMPLES)]', ']',
  [f"{P}::test_active_presets"]),
 # ---- reports and their checks
 ("p19 classify check: NLL compared the wrong way", CL, "ok = all(a < b for _, a, b in nll)", "ok = all(a > b for _, a, b in nll)",
  [f"{P}::test_classify_report"]),
 ("p20 H&G's error-detection row not mapped", OO, 'HG_KEYS = {ERRORS: "error_detection"}', "HG_KEYS = {}", [f"{P}::test_ood_report"]),
 ("p21 active check: bands apart not required", AC, "'yes' if b - r >= 2 and apart else 'no'", "'yes' if b - r >= 2 else 'no'",
  [f"{P}::test_active_report"]),
 ("p22 toy check: 4 of 5 seeds not required", TO, "ok = int((both & lower).sum()) >= 0.8 * len(g)", "ok = int((both & lower).sum()) >= 1",
  [f"{P}::test_toy_report"]),
 ("p23 toy check: KL compared in the mean over seeds, not per seed", TO,
  "lower = np.array([kl < mf_kl.get(seed, -np.inf) for seed, kl in zip(g[\"seed\"], g[\"kl\"])])",
  "lower = np.full(len(g), float(g[\"kl\"].mean()) < float(mf[\"kl\"].mean()))", [f"{P}::test_toy_report"]),
 ("p24 toy check: a seed counted on KL alone, branches ignored", TO, "ok = int((both & lower).sum())", "ok = int(lower.sum())",
  [f"{P}::test_toy_report"]),
 ("p25 warm start with a fresh Adam per acquisition (its first step blew realnvp's scales to NaN)", TB,
  "optimizer=optimizer, tail=True)", "tail=True)",
  [f"{P}::test_active_run_warm_start_keeps_one_adam"]),
 ("p26 fit ignores the optimizer it is given", "core/bhn/train.py",
  "optimizer = make_optimizer(model, lr) if optimizer is None else optimizer", "optimizer = make_optimizer(model, lr)",
  [f"{P}::test_active_run_warm_start_keeps_one_adam"]),
 ("p27 active loop drops the partial minibatch (dk_AL keeps it)", TB, "optimizer=optimizer, tail=True)", "optimizer=optimizer)",
  [f"{P}::test_active_run_warm_start_keeps_one_adam"]),
 ("p28 epoch_batches ignores tail", "core/bhn/train.py", "if n <= batch or tail:", "if n <= batch:",
  [f"{P}::test_active_run_warm_start_keeps_one_adam"]),
 ("p29 active: arch never enters the configs", AC, 'shared["arch"] = settings["arch"]', "pass",
  [f"{P}::test_active_presets", f"{P}::test_active_run_cnn_trains_the_reference_net"]),
 ("p30 the model spec ignores arch", TB, 'arch=str(config.get("arch", "mlp"))', 'arch="mlp"',
  [f"{P}::test_active_run_cnn_trains_the_reference_net"]),
]

if __name__ == "__main__":
    main(M)
