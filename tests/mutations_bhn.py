"""Deliberate mistakes in the BHN model side (issue 31, core/bhn/{wn,hypernet,models,objective,train}.py): make
each in this checkout, run the tests that must catch it, revert. Not collected by pytest; run it on a clean checkout
(it edits files while it runs and restores them):

    python tests/mutations_bhn.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed. Each entry names what the reference
(CW-Huang/BayesianHypernet BHNs.py, modules.py, utils.py, experiment_MLP_WN.py) does that the mistake breaks.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

MO, TR = "tests/test_bhn_model.py", "tests/test_bhn_train.py"
WN, HN, MD = "core/bhn/wn.py", "core/bhn/hypernet.py", "core/bhn/models.py"
OB, FI = "core/bhn/objective.py", "core/bhn/train.py"
M = [
 # objective (BHNs.Base_BHN._get_elbo, utils.log_normal)
 ("b1 prior's sign flipped (log p = +lambda g^2 / 2)", OB, "- 0.5 * prior_lambda * g * g).sum(-1)",
  "+ 0.5 * prior_lambda * g * g).sum(-1)", [MO, TR]),
 ("b2 KL weight ignored", OB, "loss = -(log_lik - kl_weight * kl / n_train)", "loss = -(log_lik - kl / n_train)", [TR]),
 ("b3 KL not divided by N", OB, "loss = -(log_lik - kl_weight * kl / n_train)", "loss = -(log_lik - kl_weight * kl)", [TR]),
 ("b4 prior precision lambda's normaliser dropped", OB, "+ 0.5 * math.log(prior_lambda) - 0.5", "- 0.5", [MO, TR]),
 ("b5 softmax not clipped to [0.001, 0.999]", OB, "probs = torch.softmax(logits, -1).clamp(bm.CLIP_LO, bm.CLIP_HI)",
  "probs = torch.softmax(logits, -1)", [TR]),
 ("b6 clip order: value clip before the norm constraint", OB,
  "    scale = torch.clamp(norm, max=max_norm) / (NORM_EPS + norm)\n    for g in grads:\n        g.mul_(scale).clamp_(-clip, clip)",
  "    for g in grads:\n        g.clamp_(-clip, clip)\n    norm = torch.sqrt(sum((g * g).sum() for g in grads))\n"
  "    scale = torch.clamp(norm, max=max_norm) / (NORM_EPS + norm)\n    for g in grads:\n        g.mul_(scale)", [TR]),
 ("b7 norm constraint 100 (dk_anomaly_detection's) as the default", OB, "MAX_NORM, CLIP_GRAD = 10.0, 5.0",
  "MAX_NORM, CLIP_GRAD = 100.0, 5.0", [TR]),
 ("b8 annealing over all epochs, not epochs / 2", OB, "0.001 + epoch / (epochs / 2.0))", "0.001 + epoch / epochs)", [TR]),
 # hypernet (modules.py LinearFlowLayer, CoupledDenseLayer, PermuteLayer; log q)
 ("b9 log q adds the log-det instead of subtracting it", HN, "return theta, hnet.base_log_prob(eps) - logdet",
  "return theta, hnet.base_log_prob(eps) + logdet", [MO, TR]),
 ("b10 coupling halves never swapped (PermuteLayer omitted)", HN, "h = h[..., self.perms[c - 1]]", "h = h", [MO]),
 ("b11b linear posterior: the shift before W", HN, "h = (h - shift) @ flows[0].t() + shift", "h = h @ flows[0].t()", [MO]),
 ("b11 IAF layers all in one order", HN, "                if c % 2:", "                if False:", [MO]),
 # primary net and init (modules.WeightNormLayer, Base_BHN._init_pnet)
 ("b12 WN direction not normalised", WN, "return self.directions[i].flatten(1).norm(dim=1)",
  "return torch.ones(self.directions[i].shape[0], dtype=self.directions[i].dtype)", [MO, TR]),
 ("b12b exact GELU instead of the reference's tanh form", WN, 'return lambda x: F.gelu(x, approximate="tanh")',
  'return lambda x: F.gelu(x)', [MO]),
 ("b13 data-dependent init multiplies g by stdv", WN, "factors.append(1.0 / stdv)", "factors.append(stdv)", [MO]),
 ("b14 init bias +m/stdv", WN, "self.biases[i].copy_(-m / stdv)", "self.biases[i].copy_(m / stdv)", [MO]),
 ("b15 init factors applied in output order (the reference's PermuteLayer mix-up)", MD,
  "shift[sources] += target - hn.hypernet_mean_path(model.hypernet)",
  "shift.mul_(target / hn.hypernet_mean_path(model.hypernet)); break", [MO]),
 # prediction (utils.MCpred / evaluate_model)
 ("b16 one MC sample of g whatever S", MD, "g = sample_scales(model, samples, generator)[0]",
  "g = sample_scales(model, 1, generator)[0].expand(samples, -1)", [MO]),
 ("b17 one MC sample at validation", FI, "probs = bm.sample_probs(model, x[start:start + max_n], samples, generator).mean(0)",
  "probs = bm.sample_probs(model, x[start:start + max_n], 1, generator).mean(0)", [MO, TR]),
 ("b18 MC dropout off at test", MD, "dropout=spec.dropout, generator=generator)",
  "dropout=spec.dropout if model.training else 0.0, generator=generator)", [MO]),
 # loop (utils.train_model)
 ("b19 best-valid weights not restored", FI, "        model.load_state_dict(best_state)\n", "        pass\n", [TR]),
 ("b20 the partial last minibatch kept", FI, "return list(perm[: (n // batch) * batch].split(batch))",
  "return list(perm.split(batch))", [TR]),
 ("b21 one clip over the whole ensemble", FI, "    for group in model.member_groups():\n        obj.clip_gradients(group)",
  "    obj.clip_gradients(list(model.parameters()))", [TR]),
]

if __name__ == "__main__":
    main(M)
