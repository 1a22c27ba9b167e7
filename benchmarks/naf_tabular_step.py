"""naf-tabular's training step at the cpu preset's shape: the code before the step work (commit 450f6ca) against now.

Shape (N5, ``naf-tabular --preset cpu`` on mixture6): 5 flows, MADE 100 x 1, d = 16, one DSF / DDSF layer, batch
100, 3 seeds stacked (K = 3), float32, one thread (a Ray trial's OMP_NUM_THREADS=1). A step is what
core.flows.train.fit does per minibatch: log_prob, autograd.grad of the summed losses, per-model clip 5, BatchedAdam.

First a check, then the timing:

- check: for dsf and ddsf with 1 and 2 DSF layers, the log-likelihoods and every parameter's gradient of the
  ``before`` forward (below, a frozen copy of 450f6ca's core.flows transformers and model.forward) equal today's
  bit for bit (torch.equal), and ``--check-steps`` training steps from one init leave equal parameters.
- timing: rounds alternating before / now in this one process (the ratio stays meaningful when other jobs share
  the cores), CPU (process) time per step, and the validation pass (5,000 points, no_grad) per epoch.

    OMP_NUM_THREADS=1 python benchmarks/naf_tabular_step.py [--steps 40] [--rounds 5] [--check-steps 30]

Ends with ``speedup=<before / now CPU time per training step>`` per transformer.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F

from core.flows import made, model, transformers
from core.flows.spec import DELTA, FlowSpec, ddsf_dims
from core.flows.train import clip_per_model
from core.flows.transformers import SOFTPLUS_INV_ONE, softplus_d
from core.optim import BatchedAdam

# ------------------------------------------------------------------ before: 450f6ca's transformers and forward, verbatim


def sigmoid_flow_before(x, p):
    d = p.shape[-1] // 3
    pa, b, pw = p[..., :d], p[..., d:2 * d], p[..., 2 * d:]
    a = softplus_d(pa)
    u = a * x[..., None] + b
    x_pre = (torch.softmax(pw, -1) * torch.sigmoid(u)).sum(-1)
    x_sq = x_pre * (1 - DELTA) + 0.5 * DELTA
    y = torch.log(x_sq) - torch.log1p(-x_sq)
    logj = torch.logsumexp(torch.log_softmax(pw, -1) + F.logsigmoid(u) + F.logsigmoid(-u) + torch.log(a), -1)
    logdet = logj + math.log(1 - DELTA) - torch.log(x_sq) - torch.log1p(-x_sq)
    return y, logdet.sum(-1)


def dsf_before(x, p, ds_layers):
    width = p.shape[-1] // ds_layers
    logdet = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for i in range(ds_layers):
        x, ld = sigmoid_flow_before(x, p[..., i * width:(i + 1) * width])
        logdet = logdet + ld
    return x, logdet


def dense_sigmoid_flow_before(h, logj_prev, p, u_, w_):
    d = u_.shape[-2]
    n_in = u_.shape[-1]
    pre_u = u_[:, None, None] + p[..., 3 * d:3 * d + n_in][..., None, :]
    pre_w = w_[:, None, None] + p[..., 2 * d:3 * d][..., None, :]
    a = softplus_d(p[..., :d] + SOFTPLUS_INV_ONE)
    b = p[..., d:2 * d]
    pre = (torch.softmax(pre_u, -1) * h[..., None, :]).sum(-1) * a + b
    x_pre = (torch.softmax(pre_w, -1) * torch.sigmoid(pre)[..., None, :]).sum(-1)
    x_sq = x_pre * (1 - DELTA) + 0.5 * DELTA
    h_new = torch.log(x_sq) - torch.log1p(-x_sq)
    inner = torch.log_softmax(pre_w, -1) + (F.logsigmoid(pre) + F.logsigmoid(-pre) + torch.log(a))[..., None, :]
    logj = torch.logsumexp(inner[..., None] + torch.log_softmax(pre_u, -1)[..., None, :, :], -2)
    logj = logj + math.log(1 - DELTA) - (torch.log(x_sq) + torch.log1p(-x_sq))[..., None]
    logj = torch.logsumexp(logj[..., None] + logj_prev[..., None, :, :], -2)
    return h_new, logj


def ddsf_before(x, p, uw, ds_dim, ds_layers):
    h = x[..., None]
    logj = torch.zeros(x.shape + (1, 1), dtype=x.dtype, device=x.device)
    start = 0
    for i, (n_in, _) in enumerate(ddsf_dims(ds_dim, ds_layers)):
        end = start + 3 * ds_dim + n_in
        h, logj = dense_sigmoid_flow_before(h, logj, p[..., start:end], uw[2 * i], uw[2 * i + 1])
        start = end
    return h[..., 0], logj[..., 0, 0].sum(-1)


def forward_before(spec, params, x):
    k, n, dim = x.shape
    layer_masks = made.masks(spec.dim, spec.hidden, spec.hidden_layers, spec.channels, spec.order, x.device, x.dtype)
    logdet = torch.zeros(k, n, dtype=x.dtype, device=x.device)
    per = model.params_per_flow(spec)
    n_made = model.made_params(spec)
    h = x
    for f in range(spec.flows):
        p = params[f * per:(f + 1) * per]
        out = made.made_forward(p[:n_made], layer_masks, h)
        w, c = p[n_made], p[n_made + 1]
        ds = torch.baddbmm(c, out.reshape(k, n * dim, spec.channels), w).view(k, n, dim, -1)
        if spec.transformer == "dsf":
            h, ld = dsf_before(h, ds, spec.ds_layers)
        else:
            h, ld = ddsf_before(h, ds, p[n_made + 2:], spec.ds_dim, spec.ds_layers)
        logdet = logdet + ld
        if spec.flip:
            h = h.flip(-1)
    m, s = params[spec.flows * per], params[spec.flows * per + 1]
    std = transformers.softplus_d(s)
    h = m + std * h
    logdet = logdet + torch.log(std).sum(-1).expand(k, n)
    return h, logdet


def log_prob_before(spec, params, x):
    if x.dim() == 2:
        x = x.expand(params[0].shape[0], *x.shape)
    z, logdet = forward_before(spec, params, x)
    return model.log_normal(z, spec.base_log_var) + logdet


# ------------------------------------------------------------------------------------------------- step, check, timing

SEEDS = [0, 1, 2]


def spec_of(transformer: str, ds_layers: int = 1) -> FlowSpec:
    return FlowSpec(dim=6, transformer=transformer, flows=5, hidden=100, hidden_layers=1, ds_dim=16, ds_layers=ds_layers,
                    base_log_var=1.0)


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """n minibatches (K, 100, 6) of heavy-ish tailed data (a Gaussian over a random scale per point)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(len(SEEDS), 100, 6, generator=gen) / torch.rand(len(SEEDS), 100, 1, generator=gen).add(0.3).sqrt()
            for _ in range(n)]


def trainer(spec: FlowSpec, log_prob):
    """(params, step(x)): one fit step (log_prob, grad, clip 5, BatchedAdam 1e-4) on a fresh block of SEEDS."""
    params = model.init_block(spec, SEEDS)
    opt = BatchedAdam(params, 1e-4)

    def step(x: torch.Tensor) -> None:
        losses = -log_prob(spec, params, x).mean(1)
        grads = list(torch.autograd.grad(losses.sum(), params))
        clip_per_model(grads, 5.0)
        opt.step(grads)
    return params, step


def check(check_steps: int) -> None:
    for transformer, layers in (("dsf", 1), ("ddsf", 1), ("dsf", 2), ("ddsf", 2)):
        spec = spec_of(transformer, layers)
        params = model.init_block(spec, SEEDS)
        with torch.no_grad():  # move off the init, where many parameters are exactly 0
            for p in params:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        for x in batches(3, seed=7):
            lp_old, lp_new = log_prob_before(spec, params, x), model.log_prob(spec, params, x)
            g_old = torch.autograd.grad(lp_old.sum(), params)
            g_new = torch.autograd.grad(lp_new.sum(), params)
            assert torch.equal(lp_old, lp_new), f"{transformer} x{layers}: log_prob differs"
            bad = [i for i, (a, b) in enumerate(zip(g_old, g_new)) if not torch.equal(a, b)]
            assert not bad, f"{transformer} x{layers}: gradients of parameters {bad} differ"
        (p_old, s_old), (p_new, s_new) = trainer(spec, log_prob_before), trainer(spec, model.log_prob)
        for x in batches(check_steps, seed=11):
            s_old(x)
            s_new(x)
        bad = [i for i, (a, b) in enumerate(zip(p_old, p_new)) if not torch.equal(a, b)]
        assert not bad, f"{transformer} x{layers}: parameters {bad} differ after {check_steps} steps"
        print(f"check {transformer} ds_layers={layers}: log_prob, gradients and {check_steps} training steps equal bit for bit",
              flush=True)


def cpu_per_call(fn, arg_list) -> float:
    start = time.process_time()
    for a in arg_list:
        fn(a)
    return (time.process_time() - start) / len(arg_list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per round and version")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, threads {torch.get_num_threads()}", flush=True)
    check(args.check_steps)
    val = torch.randn(5000, 6)  # log_prob expands (N, D) over the K models
    summary = []
    for transformer in ("dsf", "ddsf"):
        spec = spec_of(transformer)
        xs = batches(args.steps)
        versions = {"before": trainer(spec, log_prob_before)[1], "now": trainer(spec, model.log_prob)[1]}
        params = model.init_block(spec, SEEDS)
        evals = {"before": lambda v, spec=spec, params=params: log_prob_before(spec, params, v),
                 "now": lambda v, spec=spec, params=params: model.log_prob(spec, params, v)}
        times = {v: [] for v in versions}
        val_times = {v: [] for v in versions}
        for step in versions.values():  # warm-up
            cpu_per_call(step, xs[:3])
        for _ in range(args.rounds):
            for name, step in versions.items():
                times[name].append(cpu_per_call(step, xs))
                with torch.no_grad():
                    val_times[name].append(cpu_per_call(evals[name], [val]))
        best = {v: min(t) for v, t in times.items()}
        best_val = {v: min(t) for v, t in val_times.items()}
        ratio = best["before"] / best["now"]
        print(f"{transformer}: training step before {1e3 * best['before']:.2f} ms, now {1e3 * best['now']:.2f} ms CPU "
              f"(best of {args.rounds} rounds of {args.steps}; median ratio "
              f"{sorted(b / n for b, n in zip(times['before'], times['now']))[args.rounds // 2]:.2f}); "
              f"validation 5k before {1e3 * best_val['before']:.0f} ms, now {1e3 * best_val['now']:.0f} ms", flush=True)
        summary.append(f"{transformer} {ratio:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("speedup=" + ", ".join(summary))


if __name__ == "__main__":
    main()
