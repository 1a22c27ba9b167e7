"""The deliberate mistakes of issue 21 (and a few more): make each in this checkout, run the tests that must catch it,
revert. Not collected by pytest; run it on a clean checkout (it edits files while it runs and restores them):

    python tests/mutations_memorization.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
C, P = "tests/test_memorization_core.py", "tests/test_memorization_pipelines.py"
M = [
 ("1 split overlaps", "core/memorization/data.py",
  "subset(images, order[n_train : n_train + n_val], f\"{images.name}/val\")",
  "subset(images, order[n_train - n_val // 2 : n_train + n_val - n_val // 2], f\"{images.name}/val\")",
  [C + "::test_split_is_disjoint_random_and_seeded", C + "::test_load_images_digits_split_is_disjoint_and_seeded"]),
 ("2 randX per-pixel statistics", "core/memorization/data.py",
  "    mean = train.x.mean(dim=(0, 2, 3), keepdim=True)\n    std = train.x.std(dim=(0, 2, 3), keepdim=True)",
  "    mean = train.x.mean(dim=0, keepdim=True)\n    std = train.x.std(dim=0, keepdim=True)",
  [C + "::test_rand_x_uses_global_not_per_pixel_statistics", C + "::test_rand_x_fraction_statistics_and_seed"]),
 ("3a noise on the validation set (csr trainable)", "tasks/memorization.py",
  "    return train(model, train_set, data.val, epochs=epochs, seed=int(config[\"seed\"]), csr_examples=int(config[\"csr_examples\"]),",
  "    return train(model, train_set, training_set(MemData(data.val, data.val), config[\"noise\"], float(config[\"fraction\"]), 0), epochs=epochs, seed=int(config[\"seed\"]), csr_examples=int(config[\"csr_examples\"]),",
  [P + "::test_noise_reaches_the_training_set_and_never_the_validation_set"]),
 ("3b noise on the validation set (every trainable, via the data)", "tasks/memorization.py",
  "    base = data.train if not n_train else mdata.subset(data.train, torch.arange(min(n_train, len(data.train))))",
  "    base = data.train if not n_train else mdata.subset(data.train, torch.arange(min(n_train, len(data.train))))\n    if noise == \"randX\":\n        object.__setattr__(data, \"val\", mdata.rand_x(data.val, 1.0, 0)[0])",
  [P + "::test_noise_reaches_the_training_set_and_never_the_validation_set"]),
 ("4a adversarial term dropped in train()", "core/memorization/train.py",
  "                    loss, found = adversarial_loss(model, x, y, weight=adversarial_weight, **lass_settings)",
  "                    loss, found = F.cross_entropy(model(x), y), 0",
  [C + "::test_train_with_adversarial_training", P + "::test_regularizer_adversarial_config_trains_adversarially"]),
 ("4b adversarial term dropped in adversarial_loss()", "core/memorization/lass.py",
  "    return (1 - weight) * clean + weight * F.cross_entropy(model(x_hat[critical]), y[critical]), found",
  "    return clean, found",
  [C + "::test_critical_sample_ratio_and_adversarial_loss", C + "::test_train_with_adversarial_training"]),
 ("4c adversarial weight not passed by the regularizer task", "tasks/memorization.py",
  "        return {\"dropout\": float(adv_dropout)}, {\"adversarial_weight\": float(value)}",
  "        return {\"dropout\": float(adv_dropout)}, {}",
  [P + "::test_regularizer_adversarial_config_trains_adversarially", P + "::test_regularizer_kwargs"]),
 ("5 CSR on training points", "core/memorization/train.py",
  "                row[\"csr\"] = critical_sample_ratio(model, val_set.x[index].to(device), **lass_settings)",
  "                row[\"csr\"] = critical_sample_ratio(model, train_set.x[torch.randperm(len(train_set), generator=draws)[:csr_examples]].to(device), **lass_settings)",
  [C + "::test_csr_is_measured_on_validation_points"]),
 ("5b CSR on the first points, not fresh draws", "core/memorization/train.py",
  "                index = torch.randperm(len(val_set), generator=draws)[:csr_examples]",
  "                index = torch.arange(csr_examples)",
  [C + "::test_csr_draws_fresh_validation_points_every_epoch"]),
 ("6 LASS radius 0.3 on the [0,1] scale", "core/memorization/lass.py",
  "RADIUS = 0.3 / 255.0", "RADIUS = 0.3",
  [C + "::test_lass_defaults_are_the_papers_on_the_0_255_scale"]),
 ("6b LASS step 0.25 on the [0,1] scale", "core/memorization/lass.py",
  "ALPHA = 0.25 / 255.0", "ALPHA = 0.25",
  [C + "::test_lass_defaults_are_the_papers_on_the_0_255_scale"]),
 ("7a seed ignored by the data order stream", "core/memorization/train.py",
  "    words = [int(seed)] + [ord(c) for c in stream]", "    words = [0] + [ord(c) for c in stream]",
  [C + "::test_the_seed_changes_the_data_order"]),
 ("7b block ignores each run's seed for its order", "core/memorization/seeds.py",
  "    orders = [torch.Generator().manual_seed(stream_seed(s, \"order\")) for s in seeds]",
  "    orders = [torch.Generator().manual_seed(stream_seed(seeds[0], \"order\")) for s in seeds]",
  [C + "::test_block_of_seeds_equals_separate_runs", P + "::test_easy_block_equals_seeds_run_alone"]),
 ("7c sensitivity seeds share one batch order", "tasks/memorization.py",
  "    orders = [sgd_batches(len(x), batch, epochs, stream_seed(seed, \"order\"))[:steps] for seed in seeds]",
  "    orders = [sgd_batches(len(x), batch, epochs, stream_seed(0, \"order\"))[:steps] for seed in seeds]",
  [P + "::test_sensitivity_block_equals_each_seed_alone"]),
 ("7d epoch order not random", "core/memorization/train.py",
  "    return list(torch.randperm(n, generator=generator).split(batch_size))",
  "    return list(torch.arange(n).split(batch_size))",
  [C + "::test_the_seed_changes_the_data_order"]),
 ("8 randX a no-op in the loss-sensitivity pipeline", "tasks/memorization.py",
  "    images = training_set(data, \"real\" if inputs == \"real\" else \"randX\", 1.0, data_seed)",
  "    images = training_set(data, \"real\", 1.0, data_seed)",
  [P + "::test_sensitivity_block_equals_each_seed_alone"]),
 ("9a csr report: peak from training accuracy", "pipelines/memorization/csr.py",
  "\"peak_val_acc\": float(curve[\"val_acc\"].max())", "\"peak_val_acc\": float(curve[\"train_acc\"].max())",
  [P + "::test_csr_report_numbers"]),
 ("9b capacity report: censored runs averaged away", "pipelines/memorization/capacity.py",
  "    fit = np.where(group[\"fit\"].astype(bool), group[\"epochs_to_fit\"].astype(float), float(budget))",
  "    fit = group[\"epochs_to_fit\"].astype(float).dropna().to_numpy()",
  [P + "::test_capacity_report_numbers_with_censored_runs"]),
 ("9c easy report: within-class std is the total std", "pipelines/memorization/easy.py",
  "    return {\"within\": float(np.sqrt((centred ** 2).mean())),", "    return {\"within\": float(rate.std()),",
  [P + "::test_easy_report_numbers"]),
 ("9d sensitivity report: last-step Gini in the g_bar column", "pipelines/memorization/sensitivity.py",
  "        rows.append([inputs, labels, reports.pm(*reports.mean_std(group[\"gini\"]), digits=3),",
  "        rows.append([inputs, labels, reports.pm(*reports.mean_std(group[\"gini_t\"]), digits=3),",
  [P + "::test_sensitivity_report_numbers"]),
 ("9e regularizers report: final instead of best validation accuracy", "pipelines/memorization/regularizers.py",
  "\"real_best_val\": real.loc[key, (\"best_val_acc\", \"mean\")]", "\"real_best_val\": real.loc[key, (\"val_acc\", \"mean\")]",
  [P + "::test_regularizer_report_numbers"]),
 ("10 corrupt CIFAR-10 batch not caught", "core/memorization/data.py",
  "    except Exception as exc:  # any unpickling failure means the file is corrupt",
  "    except KeyError as exc:  # any unpickling failure means the file is corrupt",
  [P + "::test_load_data_auto_and_errors", P + "::test_cli_one_line_errors", C + "::test_cifar10_loader_bad_files"]),
 ("11a LASS box clamped to the pixel range (the old collapse)", "core/memorization/lass.py",
  "        lower = torch.maximum(lower, x.clamp(max=lo))  # max(x - r, min(lo, x))\n        upper = torch.minimum(upper, x.clamp(min=hi))  # min(x + r, max(hi, x))",
  "        lower, upper = lower.clamp(lo, hi), upper.clamp(lo, hi)",
  [C + "::test_lass_box_never_leaves_the_r_box_for_inputs_outside_the_pixel_range"]),
 ("11b LASS without the early stop", "core/memorization/lass.py",
  "            if found < min_new:\n                break", "            pass",
  [C + "::test_lass_stops_when_an_iteration_finds_too_few_new_critical_points"]),
 ("11c LASS clips to [0, 1] by default", "core/memorization/lass.py",
  "    pixel_range: tuple[float, float] | None = None,\n    generator", "    pixel_range: tuple[float, float] | None = (0.0, 1.0),\n    generator",
  [C + "::test_lass_does_not_clip_to_the_pixel_range_by_default"]),
 ("11d capacity stops a width once it fits", "tasks/memorization.py",
  "                             device=_device())\n        for k, i in enumerate(members):",
  "                             device=_device(), stop_when_fit=True)\n        for k, i in enumerate(members):",
  [P + "::test_capacity_trains_every_width_for_the_same_budget_equal_to_runs_alone"]),
 ("11e stacked loss-sensitivity mixes the runs' inputs", "core/memorization/sensitivity.py",
  "        leaves.append(flat[index].requires_grad_(True))",
  "        leaves.append(flat[index[:1]].expand_as(flat[index]).clone().requires_grad_(True))",
  [C + "::test_unrolled_sensitivity_block_equals_each_run_alone"]),
 ("11f fused SGD step with the wrong sign", "core/memorization/seeds.py",
  "                    p.baddbmm_(h.transpose(1, 2), delta, alpha=-lr)", "                    p.baddbmm_(h.transpose(1, 2), delta, alpha=lr)",
  [C + "::test_block_of_seeds_equals_separate_runs"]),
]
only = sys.argv[1:]
out = []
for name, path, old, new, tests in M:
    if only and not any(name.startswith(o) for o in only):
        continue
    full = os.path.join(ROOT, path)
    text = open(full).read()
    assert text.count(old) == 1, (name, text.count(old))
    open(full, "w").write(text.replace(old, new))
    try:
        proc = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT}, timeout=900)
        summary = [l for l in proc.stdout.splitlines() if "passed" in l or "failed" in l or "error" in l][-1:]
        failed = [l.split(" - ")[0].replace("FAILED ", "") for l in proc.stdout.splitlines() if l.startswith("FAILED")]
    finally:
        open(full, "w").write(text)
    caught = proc.returncode != 0
    out.append((name, caught, summary, failed))
    print(("CAUGHT  " if caught else "MISSED  ") + name, summary, failed, flush=True)
missed = [name for name, caught, _, _ in out if not caught]
print(f"{len(out) - len(missed)} of {len(out)} caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
sys.exit(1 if missed else 0)
