"""Deliberate mistakes in the NAF study (issue 30: the flow core first; pipeline-level mistakes follow): make each in
this checkout, run the tests that must catch it, revert. Not collected by pytest; run it on a clean checkout (it edits
files while it runs and restores them):

    python tests/mutations_naf.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed. Each entry names what the reference does that the
mistake breaks (torchkit/flows.py, iaf_modules.py, nn.py, optim.py, toy_energy.py; NAF maf_experiments.py; BHN modules.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

F, T, E, C = "tests/test_flows.py", "tests/test_flows_train.py", "tests/test_flows_energies.py", "tests/test_flows_coupling.py"
ORA = "tests/test_flows_oracle.py"
TR, MO, MA, TN = "core/flows/transformers.py", "core/flows/model.py", "core/flows/made.py", "core/flows/train.py"
EN, CO = "core/flows/energies.py", "core/flows/coupling.py"
M = [
 # ---- the flow core (helper F, issue 30) ----
 # transformers (torchkit/flows.py IAF, SigmoidFlow, DenseSigmoidFlow; MAF paper)
 ("f1 maf log-det sign flipped", TR, "return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)",
  "return (x - mu) * torch.exp(-alpha), alpha.sum(-1)", [F, ORA]),
 ("f2 gated affine: the gate not applied to x", TR, "return (1 - s) * m + s * x, torch.log(s).sum(-1)",
  "return (1 - s) * m + x, torch.log(s).sum(-1)", [F]),
 ("f3 DSF delta squash dropped", TR,
  "    x_pre = (torch.softmax(pw, -1) * torch.sigmoid(u)).sum(-1)\n    x_sq = x_pre * (1 - DELTA) + 0.5 * DELTA",
  "    x_pre = (torch.softmax(pw, -1) * torch.sigmoid(u)).sum(-1)\n    x_sq = x_pre", [F, ORA]),
 ("f4 DSF log(1 - delta) term dropped", TR, "logdet = logj + math.log(1 - DELTA) - torch.log(x_sq) - torch.log1p(-x_sq)",
  "logdet = logj - torch.log(x_sq) - torch.log1p(-x_sq)", [F, ORA]),
 ("f5 DSF w by softplus, not softmax", TR, "x_pre = (torch.softmax(pw, -1) * torch.sigmoid(u)).sum(-1)",
  "x_pre = (softplus_d(pw) / softplus_d(pw).sum(-1, keepdim=True) * torch.sigmoid(u)).sum(-1)", [F, ORA]),
 ("f6 softplus without + delta (a can reach 0)", TR, "    return F.softplus(x) + DELTA", "    return F.softplus(x)", [F, ORA]),
 ("f7 DDSF: u's log dropped from the log-matrix-product", TR,
  "torch.logsumexp(inner[..., None] + torch.log_softmax(pre_u, -1)[..., None, :, :], -2)",
  "torch.logsumexp(inner[..., None] + torch.softmax(pre_u, -1)[..., None, :, :], -2)", [F]),
 ("f8 DDSF: previous layers' log-Jacobian not chained", TR,
  "logj = torch.logsumexp(logj[..., None] + logj_prev[..., None, :, :], -2)",
  "logj = torch.logsumexp(logj[..., None] + 0 * logj_prev[..., None, :, :], -2)", [F]),
 # MADE (torchkit/iaf_modules.py get_masks)
 ("f9 output mask off by one (x_i sees itself)", MA, "out = (degs[0][None, :] > degs[-1][:, None])",
  "out = (degs[0][None, :] >= degs[-1][:, None])", [F]),
 ("f10 hidden mask strict (drops allowed inputs)", MA, "masks = [(d_out[None, :] >= d_in[:, None]) for",
  "masks = [(d_out[None, :] > d_in[:, None]) for", [F]),
 ("f11 weight norm over the wrong axis", MA, "(g / v.pow(2).sum(1, keepdim=True).sqrt())", "(g / v.pow(2).sum(2, keepdim=True).sqrt())", [F, T]),
 # the stack (torchkit density model: flows + FlipFlow, LinearFlow)
 ("f12 flip omitted", MO, "            h = h.flip(-1)", "            h = h", [F]),
 ("f13 LinearFlow log-det subtracted", MO, "logdet = logdet + torch.log(std).sum(-1).expand(k, n)",
  "logdet = logdet - torch.log(std).sum(-1).expand(k, n)", [F]),
 ("f14 DSF a-bias init on the b slice", MO, "c[0, 3 * spec.ds_dim * i: 3 * spec.ds_dim * i + spec.ds_dim] = transformers.SOFTPLUS_INV_ONE",
  "c[0, 3 * spec.ds_dim * i + spec.ds_dim: 3 * spec.ds_dim * i + 2 * spec.ds_dim] = transformers.SOFTPLUS_INV_ONE", [F]),
 ("f15 gate bias 2.0 on the mean channel", MO, "last[2][0, 1::2] = 2.0", "last[2][0, 0::2] = 2.0", [F]),
 ("f16 every configuration from the first seed", MO, "per_model = [_init_one(spec, s) for s in seeds]",
  "per_model = [_init_one(spec, seeds[0]) for s in seeds]", [F]),
 # trainer (torchkit/optim.py Adam polyak + swap; maf_experiments.py clip, patience)
 ("f17 one clip norm over the whole block", TN, "norms = torch.linalg.vector_norm(norms, dim=1)  #",
  "norms = torch.linalg.vector_norm(norms).expand(norms.shape[0])  #", [T]),
 ("f18 stopped models keep training", TN, "opt.step(grads, active=None if all_active else active)", "opt.step(grads)", [T]),
 ("f19 Polyak not swapped in at evaluation", TN,
  "        if avg is not None:\n            _swap(params, avg)\n        with torch.no_grad():\n            metric",
  "        with torch.no_grad():\n            metric", [T]),
 ("f20 Polyak decay reversed", TN, "a.copy_(torch.where(keep, polyak * a + (1 - polyak) * p, a))",
  "a.copy_(torch.where(keep, (1 - polyak) * a + polyak * p, a))", [T]),
 ("f21 patience off by one", TN, "active = active & ~(n_evals - best_eval > patience)",
  "active = active & ~(n_evals - best_eval >= patience)", [T]),
 ("f22 best copy taken for every model when one improves", TN,
  "b.copy_(torch.where(better.view((-1,) + (1,) * (p.dim() - 1)), p.detach(), b))",
  "b.copy_(p.detach() if bool(better.any()) else b)", [T]),
 # energies (torchkit/toy_energy.py) and quadrature
 ("f23 U1 ring width 0.45", EN, "e1 = 0.5 * ((z.pow(2).sum(-1).sqrt() - 2.0) / 0.4) ** 2",
  "e1 = 0.5 * ((z.pow(2).sum(-1).sqrt() - 2.0) / 0.45) ** 2", [E]),
 ("f24 U4 weights swapped", EN, "U4_WEIGHTS = (0.1, 0.3, 0.4, 0.2)", "U4_WEIGHTS = (0.3, 0.1, 0.4, 0.2)", [E]),
 ("f25 U4 on z, not 2z", EN, "    z = z * 2\n", "    z = z * 1\n", [E]),
 ("f26 U7 cos frequency 0.5 pi", EN, "w1 = torch.cos(z1 * 0.35 * math.pi)", "w1 = torch.cos(z1 * 0.5 * math.pi)", [E]),
 ("f27 log Z: cell area h, not h^2", EN, "+ 2 * math.log(h))", "+ math.log(h))", [E]),
 ("f28 U6 box back to 8 (tail cut)", EN, '"U6": 24.0', '"U6": 8.0', [E]),
 # BHN flows (modules.py)
 ("f29 coupling scale without + 0.001", CO, "s = torch.exp(torch.baddbmm(b21, h, w21)) + BHN_DELTA",
  "s = torch.exp(torch.baddbmm(b21, h, w21))", [C]),
 ("f30 coupling log-det of the shift", CO, "return torch.cat([x1, s * x2 + m], -1), torch.log(s).sum(-1)",
  "return torch.cat([x1, s * x2 + m], -1), torch.log(s).sum(-1) + m.sum(-1)", [C]),
 ("f31 IAF std without exp", CO, "std = torch.exp(out[..., 1]) + BHN_DELTA", "std = out[..., 1].abs() + BHN_DELTA", [C]),
 # context (torchkit/nn.py CWNlinear: cscale(c) * (x W) + cbias(c))
 ("f32 context weights of scale and bias swapped", MA,
  "h = torch.addcmul(torch.baddbmm(b, context, wb), torch.bmm(h, w), torch.baddbmm(g, context, ws))",
  "h = torch.addcmul(torch.baddbmm(b, context, ws), torch.bmm(h, w), torch.baddbmm(g, context, wb))", [F]),
 ("f33 context left out of the scale", MA, "torch.bmm(h, w), torch.baddbmm(g, context, ws))", "torch.bmm(h, w), g)", [F]),
 ("f34 missing context read as zeros, not ones", MO, "        return torch.ones(k, n, spec.context, dtype=like.dtype, device=like.device)",
  "        return torch.zeros(k, n, spec.context, dtype=like.dtype, device=like.device)", [F]),
 # base density (maf_experiments.MAF.density: utils.log_normal(z, 0, log_var=1.0))
 ("f35 base log-variance ignored by log_prob", MO, "return log_normal(z, spec.base_log_var) + logdet", "return log_normal(z) + logdet", [F]),
 ("f36 base variance inverted", MO, "(z * z).sum(-1) * math.exp(-log_var)", "(z * z).sum(-1) * math.exp(log_var)", [F]),
 ("f37 FlowSpec.order ignored", MO, "spec.hidden_layers, spec.channels, spec.order, x.device, x.dtype)",
  "spec.hidden_layers, spec.channels, None, x.device, x.dtype)", [F]),
]

# ---- the naf study around the flow core (helper G, issue 30): data, sine-wave quadrature, KL directions, presets, reports ----
NC, NP = "tests/test_naf_core.py", "tests/test_naf_pipelines.py"
M += [
 ("g1 sinewave KL direction", "core/naf/sinewave.py",
  "kl = ((log_q - log_likelihood(f) + logz) * weights).sum(-1)", "kl = ((log_likelihood(f) - logz - log_q) * weights).sum(-1)",
  [NC + "::test_q_metrics_are_reverse_kl_and_window_masses"]),
 ("g2 toy reverse KL log Z sign", "core/naf/metrics.py",
  'rows.append({"kl_nats": float(g.mean()) + log_z,', 'rows.append({"kl_nats": float(g.mean()) - log_z,',
  [NP + "::test_reverse_kl_of_a_gaussian_q"]),
 ("g3 toy forward KL direction", "core/naf/metrics.py", "diff = log_p - log_q[k]", "diff = log_q[k] - log_p",
  [NP + "::test_forward_kl_on_mog4_of_a_gaussian_q"]),
 ("g4 posterior quadrature grid too coarse", "core/naf/sinewave.py",
  "def true_mode_masses(n: int = 200_001)", "def true_mode_masses(n: int = 2_001)",
  [NC + "::test_true_posterior_quadrature_converged"]),
 ("g5 noise quadrature grid too coarse", "core/naf/sinewave.py",
  "def eps_grid(n: int = 20_001, box: float = 8.0)", "def eps_grid(n: int = 201, box: float = 8.0)",
  [NC + "::test_q_metrics_are_reverse_kl_and_window_masses"]),
 ("g6 mode window off", "core/naf/sinewave.py", "HALF_WIDTH = 0.1 ", "HALF_WIDTH = 0.05 ",
  [NC + "::test_true_posterior_quadrature_converged", NC + "::test_q_metrics_are_reverse_kl_and_window_masses"]),
 ("g7 mixture6 weight wrong", "core/naf/data.py",
  "return Mixture6(np.array([0.3, 0.3, 0.4])", "return Mixture6(np.array([0.4, 0.3, 0.3])",
  [NC + "::test_mixture6_entropy_and_its_precision"]),
 ("g8 mixture6 sinh-arcsinh sampler inconsistent with its density", "core/naf/data.py",
  "sas = np.sinh((np.arcsinh(eps) + mix.skew) / mix.tail)", "sas = np.sinh((np.arcsinh(eps) - mix.skew) / mix.tail)",
  [NC + "::test_mixture6_density_is_normalised_and_matches_its_sampler"]),
 ("g9 digits63 not dequantised", "core/naf/data.py",
  "x = (x + rng.rand(*x.shape)) / 17.0", "x = (x + 0 * rng.rand(*x.shape)) / 17.0",
  [NC + "::test_digits63_dequantised_standardised_last_pixel_dropped"]),
 ("g10 MAF validation and test swapped", "core/naf/data.py",
  "parts = [np.asarray(p, dtype=np.float32) for p in (train, val, test)]", "parts = [np.asarray(p, dtype=np.float32) for p in (train, test, val)]",
  [NC + "::test_power_is_mafs_preprocessing", NC + "::test_miniboone_gas_hepmass_bsds300"]),
 ("g11 mixture6 test drawn with the validation size", "core/naf/data.py",
  "for k, n in enumerate((n_train, n_val, n_test))", "for k, n in enumerate((n_train, n_test, n_val))",
  [NC + "::test_mixture6_splits_are_disjoint_draws"]),
 ("g12 swissroll not divided by 3", "core/naf/data.py", "[:, [0, 2]] / 3.0)", "[:, [0, 2]] / 2.0)",
  [NC + "::test_swissroll_is_naf_examples"]),
 ("g13 grid10 variance", "core/naf/data.py", "np.full(100, 1.0 / (10 * np.log(10)))", "np.full(100, 1.0 / 10)",
  [NC + "::test_grid10_is_ten_by_ten"]),
 ("g14 sine-wave annealing start", "core/naf/sinewave.py",
  'return min(1.0, P["anneal_start"] + step / (P["anneal_fraction"] * total))', 'return min(1.0, step / (P["anneal_fraction"] * total))',
  [NC + "::test_sinewave_energy_and_modes"]),
 ("g15 published NAF value", "core/naf/hparams.py",
  '"NAF DDSF (5)": dict(power=(0.62, 0.01)', '"NAF DDSF (5)": dict(power=(0.26, 0.01)',
  [NC + "::test_published_table_is_a1"]),
 ("g16 tabular hidden-vs-dimension check off", "pipelines/naf/common.py", "    if hidden < dim:", "    if hidden < 2:",
  [NP + "::test_bad_settings"]),
 ("g17 toy energy config not N1's", "core/naf/hparams.py",
  "TOY_ENERGY = dict(hidden=64, hidden_layers=3, flows=1,", "TOY_ENERGY = dict(hidden=64, hidden_layers=3, flows=4,",
  [NP + "::test_toy_presets"]),
 ("g18 toy noise shared across the block", "tasks/naf.py",
  "pool = torch.from_numpy(np.stack([ndata.toy_sample(target, steps * batch, 10_000 + s) for s in seeds]))",
  "pool = torch.from_numpy(np.stack([ndata.toy_sample(target, steps * batch, 10_000 + k) for k, s in enumerate(seeds)]))",
  [NP + "::test_toy_block_equals_runs_alone"]),
 ("g19 sine report covers threshold", "pipelines/naf/sinewave.py",
  "def covers(row, share: float = 0.15)", "def covers(row, share: float = 0.5)",
  [NP + "::test_sinewave_and_tabular_reports"]),
 ("g20 VAE KL direction", "core/naf/vae.py", "    return log_px, log_q - log_pz", "    return log_px, log_pz - log_q",
  ["tests/test_naf_vae.py::test_gaussian_posterior_kl_is_kl_q_to_prior"]),
 ("g21 epoch minibatches: one permutation for every epoch", "tasks/naf.py", "        if i == 0:\n            order[:]",
  "        if step == 0:\n            order[:]", [NP + "::test_epoch_minibatches_cover_each_epoch_once_and_redraw_per_model"]),
 ("g22 epoch minibatches: every model on the first model's permutation", "tasks/naf.py",
  "torch.stack([torch.randperm(n, generator=g) for g in generators])",
  "torch.randperm(n, generator=generators[0]).expand(len(generators), n)",
  [NP + "::test_epoch_minibatches_cover_each_epoch_once_and_redraw_per_model"]),
 # N1's random MADE order (torchkit iaf_modules.get_masks_all, fixed_order=False) behind naf-toy's energy_order
 ("g23 random order not random", "core/flows/made.py", "return tuple(int(i) for i in torch.randperm(dim, generator=gen))",
  "return tuple(range(dim))", [F + "::test_random_order_is_a_seeded_uniform_permutation",
                               NP + "::test_toy_random_order_groups_seeds_by_their_draw_and_keeps_ids"]),
 ("g24 the config's order not read into the FlowSpec", "tasks/naf.py", 'order=config.get("order"))', "order=None)",
  [NP + "::test_toy_random_order_groups_seeds_by_their_draw_and_keeps_ids", NP + "::test_toy_random_order_block_equals_runs_alone"]),
 ("g25 random-order blocks mix seeds of different orders", "pipelines/naf/toy.py",
  "by_order.setdefault(random_order(2, s), []).append(s)", "by_order.setdefault(random_order(2, 0), []).append(s)",
  [NP + "::test_toy_random_order_groups_seeds_by_their_draw_and_keeps_ids"]),
 ("g26 energy_order defaults to random (recorded ids change)", "pipelines/naf/toy.py",
  '"energy_order": Setting("natural",', '"energy_order": Setting("random",',
  [NP + "::test_toy_random_order_groups_seeds_by_their_draw_and_keeps_ids"]),
 # N4's context-conditioned flows (vae_experiments.py: cMADE context_dim = dimc) behind naf-vae's faithful
 ("g27 VAE flow not fed the encoder's context", "core/naf/vae.py",
  "context.repeat_interleave(reps, 1) if spec.context else None)", "None)",
  ["tests/test_naf_vae.py::test_faithful_posterior_flow_is_conditioned_on_the_encoders_context"]),
 ("g28 VAE context taken before the encoder's activation", "core/naf/vae.py",
  'context = _mlp(vae["enc"][:-2], x, last_activation=True)', 'context = _mlp(vae["enc"][:-2], x)',
  ["tests/test_naf_vae.py::test_gaussian_posterior_kl_is_kl_q_to_prior",
   "tests/test_naf_vae.py::test_faithful_posterior_flow_is_conditioned_on_the_encoders_context"]),
 ("g29 faithful VAE keeps the trailing LinearFlow", "pipelines/naf/vae.py",
  'dict(context=settings["hidden"], final_linear=False) if settings["faithful"]', 'dict(context=settings["hidden"]) if settings["faithful"]',
  ["tests/test_naf_vae.py::test_vae_faithful_setting_keys_and_unchanged_ids"]),
 ("g30 vae_run ignores the config's context", "tasks/naf.py", 'context=int(config.get("context", 0)),\n        final_linear',
  'context=0,\n        final_linear', ["tests/test_naf_vae.py::test_vae_trainable_faithful_runs"]),
 # the step work (benchmarks/naf_tabular_step.py): DSF / DDSF parameters by one split, DDSF's one-input shortcuts
 ("g31 DSF split in the order (a, w, b), not torchkit's (a, b, w)", TR, "pa, b, pw = p.split(p.shape[-1] // 3, -1)",
  "pa, pw, b = p.split(p.shape[-1] // 3, -1)", [F, ORA]),
 ("g32 DDSF split in the order (a, b, u, w), not torchkit's (a, b, w, u)", TR, "pa, b, pw, pu = p.split([d, d, d, n_in], -1)",
  "pa, b, pu, pw = p.split([d, d, n_in, d], -1)", [F]),
 ("g33 DDSF one-input layer weighted by sigmoid(u_), not softmax (= 1)", TR,
  "pre = h * torch.softmax(u_, -1).view(u_.shape[0], 1, 1, d) * a + b", "pre = h * torch.sigmoid(u_).view(u_.shape[0], 1, 1, d) * a + b", [F]),
 ("g34 DDSF chain rule skipped after the first layer", TR, "    if logj_prev is None:  # log dh/dx = 0", "    if True:  # log dh/dx = 0", [F]),
]

if __name__ == "__main__":
    main(M)
