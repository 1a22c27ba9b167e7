"""Deliberate mistakes in the DomainBed experiment (issue 20): make each in this checkout, run the tests that must catch
it, revert. Not collected by pytest; run it on a clean checkout (it edits files while it runs and restores them):

    python tests/mutations_domainbed.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed. Each entry names what DomainBed does that the
mistake breaks (domainbed/datasets.py, hparams_registry.py, algorithms.py, model_selection.py, collect_results.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

D, H, OB = "tests/test_domainbed_data.py", "tests/test_domainbed_hparams.py", "tests/test_domainbed_objectives.py"
S, T, P = "tests/test_domainbed_selection.py", "tests/test_domainbed_train.py", "tests/test_domainbed_pipeline.py"
DATA, HP, SEL = "core/domainbed/data.py", "core/domainbed/hparams.py", "pipelines/rex/selection.py"
CM = D + "::test_colored_mnist_equals_domainbed_construction"
R = "tests/test_registries.py"
M = [
 # data (datasets.py)
 ("d1 label noise 0.2, not 0.25", DATA, "LABEL_NOISE = 0.25", "LABEL_NOISE = 0.2", [D]),
 ("d2 colour flips in the wrong environments", DATA, "COLOR_FLIP = (0.1, 0.2, 0.9)", "COLOR_FLIP = (0.2, 0.1, 0.9)", [D]),
 ("d3 colour from the clean label", DATA,
  "            y = (y - (torch.rand(len(y), generator=g) < LABEL_NOISE).float()).abs()  # torch_xor_(labels, bernoulli(0.25))\n"
  "            color = (y - ",
  "            clean = y\n            y = (y - (torch.rand(len(y), generator=g) < LABEL_NOISE).float()).abs()\n"
  "            color = (clean - ", [D]),
 ("d4 the other channel not zeroed", DATA,
  "torch.stack([flat * (color == 0).view(-1, 1, 1), flat * (color == 1).view(-1, 1, 1)], dim=1)",
  "torch.stack([flat * (color == 0).view(-1, 1, 1), flat], dim=1)", [D]),
 ("d5 rotation clockwise", DATA, ".rotate(angle, resample", ".rotate(-angle, resample", [D]),
 ("d6 environments as contiguous blocks, not dealt round-robin", DATA, "index = shuffle[i::n_envs]",
  "index = shuffle.chunk(n_envs)[i]", [D]),
 ("d7 in and out splits swapped", DATA, "    return keys[:cut], keys[cut:]", "    return keys[cut:], keys[:cut]", [D]),
 ("d8 split seeded seed_hash(env, trial), not (trial, env)", DATA, "RandomState(seed_hash(trial_seed, env_index))",
  "RandomState(seed_hash(env_index, trial_seed))", [D]),
 ("d9 pixels not divided by 255", DATA, "flat = base.views[env.view][env.index[positions]].to(dtype).div_(255.0)",
  "flat = base.views[env.view][env.index[positions]].to(dtype)", [D]),
 # hyperparameters (hparams_registry.py, sweep.py)
 ("h1 VREx lambda 10^U(-1, 4)", HP, '("vrex_lambda", 1e1, LogUniform(-1, 5))', '("vrex_lambda", 1e1, LogUniform(-1, 4))', [H]),
 ("h2 lr 10^U(-4, -2.5)", HP, '("lr", 1e-3, LogUniform(-4.5, -2.5))', '("lr", 1e-3, LogUniform(-4, -2.5))', [H]),
 ("h3 batch 2^U(3, 8)", HP, "LogUniform(3, 9, base=2, integer=True)", "LogUniform(3, 8, base=2, integer=True)", [H]),
 ("h4 draw seed (trial, hparams), not (hparams, trial)", HP, "random_hparams(algorithm, seed_hash(hparams_seed, trial_seed))",
  "random_hparams(algorithm, seed_hash(trial_seed, hparams_seed))", [H]),
 ("h5 VREx default lambda 100", HP, '("vrex_lambda", 1e1,', '("vrex_lambda", 1e2,', [H]),
 ("h6 IRM default anneal 100", HP, '("irm_penalty_anneal_iters", 500,', '("irm_penalty_anneal_iters", 100,', [H]),
 ("h7 run seed hashes a tuple of test envs, not a list", HP,
  "seed_hash(dataset, algorithm, list(test_envs), hparams_seed, trial_seed)",
  "seed_hash(dataset, algorithm, tuple(test_envs), hparams_seed, trial_seed)", [H]),
 ("h8 one shared RandomState for every hyperparameter", HP,
  "    draws = {name: default if space is None else space.draw(np.random.RandomState(seed_hash(seed, name)))",
  "    state = np.random.RandomState(seed)\n    draws = {name: default if space is None else space.draw(state)", [H]),
 # the registry alone (issue 29): the Optuna distributions the pipeline records are built from the draws' range table
 ("h9 anneal steps int(10^U(0, 3)), in the registry only", HP, '("irm_penalty_anneal_iters", 500, LogUniform(0, 4, integer=True))',
  '("irm_penalty_anneal_iters", 500, LogUniform(0, 3, integer=True))', [R + "::test_domainbed_optuna_distributions_are_hparams_registry_ranges"]),
 # objectives (algorithms.py)
 ("o1 IRM penalty the square of the whole batch's gradient", "core/objectives.py",
  "    return ce_scale_grad(logits[..., ::2, :], y[..., ::2]) * ce_scale_grad(logits[..., 1::2, :], y[..., 1::2])",
  "    return ce_scale_grad(logits, y) ** 2", [OB, T + "::test_runs_equal_a_domainbed_loop"]),
 ("o2 VREx sample variance (n - 1)", "core/objectives.py",
  "    return ((risks - risks.mean(dim=-1, keepdim=True)) ** 2).mean(dim=-1)",
  "    return ((risks - risks.mean(dim=-1, keepdim=True)) ** 2).sum(dim=-1) / (risks.shape[-1] - 1)",
  [OB, T + "::test_runs_equal_a_domainbed_loop"]),
 ("o3 the loss divided by the penalty weight (the CMNIST codes' rescaling)", "core/methods.py",
  "    return loss + weight * penalty, penalty, None", "    return (loss + weight * penalty) / weight.clamp(min=1.0), penalty, None",
  [OB, T + "::test_runs_equal_a_domainbed_loop"]),
 ("o4 GroupDRO weights not normalised", "core/objectives.py", "    return q / q.sum(dim=-1, keepdim=True)", "    return q",
  [OB, T + "::test_runs_equal_a_domainbed_loop"]),
 ("o5 GroupDRO gradient through its weights", "core/objectives.py", "q = q * torch.exp(eta * risks.detach())",
  "q = q * torch.exp(eta * risks)", [OB]),
 ("o6 anneal one step late", "core/objectives.py", "torch.where(step >= anneal.to(pw.device), pw", "torch.where(step > anneal.to(pw.device), pw",
  [OB, T + "::test_runs_equal_a_domainbed_loop"]),
 # the stacked trainer (train.py, networks.py)
 ("t1 Adam not reset at the anneal step", "core/domainbed/train.py", "reset = self.anneal == step", "reset = self.anneal < 0",
  [T + "::test_runs_equal_a_domainbed_loop"]),
 ("t2 Adam eps 1e-6", "core/optim.py", "ADAM_EPS = 1e-8", "ADAM_EPS = 1e-6", [T + "::test_runs_equal_a_domainbed_loop"]),
 ("t3 one learning rate for every model of a block", "core/domainbed/train.py",
  "BatchedAdam(self.params, [r.lr for r in self.runs])", "BatchedAdam(self.params, [self.runs[0].lr for r in self.runs])",
  [T + "::test_block_equals_runs_alone"]),
 ("t3b one penalty weight for every model of a block", "core/domainbed/train.py",
  "self.penalty_weight = vector([r.penalty_weight for r in self.runs])",
  "self.penalty_weight = vector([self.runs[0].penalty_weight for r in self.runs])", [T + "::test_block_equals_runs_alone"]),
 ("t3c one GroupDRO step for every model of a block", "core/domainbed/train.py", "self.eta = vector([r.eta for r in self.runs])",
  "self.eta = vector([self.runs[0].eta for r in self.runs])", [T + "::test_block_equals_runs_alone"]),
 ("t3d one anneal step for every model of a block", "core/domainbed/train.py",
  "self.anneal = vector([r.anneal_iters for r in self.runs], torch.long)",
  "self.anneal = vector([self.runs[0].anneal_iters for r in self.runs], torch.long)", [T + "::test_block_equals_runs_alone"]),
 ("t4 stacked GroupNorm over 4 groups per model", "core/domainbed/model.py", "F.group_norm(F.relu(h), GROUPS * k,",
  "F.group_norm(F.relu(h), 4 * k,", [T + "::test_stacked_forward_is_each_models_network", T + "::test_block_equals_runs_alone"]),
 ("t5 network: norm before ReLU", "core/domainbed/model.py", "            x = norm(F.relu(conv(x)))", "            x = F.relu(norm(conv(x)))",
  [T + "::test_stacked_forward_is_each_models_network", T + "::test_runs_equal_a_domainbed_loop"]),
 ("t6 minibatches drawn from the out-split", "core/domainbed/train.py",
  "positions = self.tables.in_keys[runs, self.train_envs.unsqueeze(-1), drawn]",
  "positions = self.tables.out_keys[runs, self.train_envs.unsqueeze(-1), drawn.clamp(max=self.tables.out_keys.shape[-1] - 1)]",
  [T + "::test_runs_equal_a_domainbed_loop"]),
 ("t7 the anneal step not scaled by anneal_scale", "core/domainbed/train.py",
  "anneal_iters=int(int(config.get(entry.anneal_key, 0)) * float(config.get(\"anneal_scale\", 1.0)))",
  "anneal_iters=int(config.get(entry.anneal_key, 0))", [T + "::test_run_from_config_reads_domainbeds_names"]),
 # model selection (model_selection.py, collect_results.py)
 ("s1 training-domain validation on the in-splits", SEL, 'val_cols = [f"env{i}_out_acc" for i in range(envs) if i != test_env]',
  'val_cols = [f"env{i}_in_acc" for i in range(envs) if i != test_env]', [S]),
 ("s2 oracle early-stops on the test out-split", SEL, "        last = single.iloc[-1]\n",
  "        last = single.iloc[int(single[f\"env{test_env}_out_acc\"].values.argmax())]\n", [S]),
 ("s3 oracle reports the out-split", SEL,
  '"test_acc": float(last[test_in]), "step": int(last["step"])}', '"test_acc": float(last[f"env{test_env}_out_acc"]), "step": int(last["step"])}',
  [S]),
 ("s4 leave-one-domain-out on the pairs' out-splits", SEL, 'val[j] = part.set_index("step")[f"env{j}_in_acc"]',
  'val[j] = part.set_index("step")[f"env{j}_out_acc"]', [S]),
 ("s5 ties to the lowest hparams_seed", SEL, "hparams_seed, acc = sorted(picked, key=key)[::-1][0]",
  "hparams_seed, acc = max(picked, key=key)", [S]),
 ("s6 standard error with the sample std", SEL, "np.std(np.asarray(values) / np.sqrt(len(values)))",
  "np.std(np.asarray(values) / np.sqrt(len(values)), ddof=1)", [S]),
 ("s7 a pair run counted in the iid rule", SEL, '    single = run[run["test_envs"].map(len) == 1].sort_values("step", kind="stable")',
  '    single = run.sort_values("step", kind="stable")', [S]),
 # the pipeline
 ("p1 smoke preset without the batch cap", "pipelines/rex/domainbed.py", '"smoke": dict(steps=201, anneal_scale=0.04, max_batch_size=32),', '"smoke": dict(steps=201, anneal_scale=0.04),',
  [P + "::test_presets_size_the_sweep"]),
 ("p2 draws without the pairs (no leave-one-domain-out)", "pipelines/rex/domainbed.py",
  'pairs=dataset in settings["loo_datasets"])', "pairs=False)", [P]),
 ("p3 a published table written in the pipeline (a second home)", "pipelines/rex/domainbed.py",
  "\n\n\ndef load_data(", "\n\n\nPUBLISHED = dbh.PUBLISHED\n\n\ndef load_data(",
  [R + "::test_published_tables_are_defined_only_in_the_core_registries"]),
]
if __name__ == "__main__":
    main(M)
