"""The stacked density model: K configurations of one FlowSpec, parameters as a list of (K, ...) tensors.

torchkit's density model (NAF maf_experiments.MAF): ``spec.flows`` x [MADE-conditioned transformer, FlipFlow],
then LinearFlow, base N(0, I). :func:`forward` is the x -> z map (MAF direction, used for density estimation);
IAF use (energy fitting, the VAE posterior) applies the same map to noise (:func:`sample`).

Parameter list, per flow: MADE [V, g, b] (+ [Ws, Wb] with spec.context > 0) x (hidden_layers + 1) (made.py); for dsf/ddsf the per-feature 1x1 map
``out_to_dsparams`` [W (K, C, P), c (K, 1, P)] (torchkit's Conv1d with kernel 1: one (C -> P) map shared by the
features); for ddsf the unconditional [u_ (K, d, in), w_ (K, out, d)] per DDSF layer. Then LinearFlow [m (K, 1, D),
s (K, 1, D)]: z = m + (softplus(s) + delta) x, a documented simpler equivalent of torchkit's context-fed ResLinear
LinearFlow under zero context (there it is a constant mean ~ 1e-3 and a constant pre-std ~ softplus^-1(1 - delta);
here m ~ U(-0.001, 0.001), s = softplus^-1(1 - delta), std = 1).

``spec.context`` > 0 conditions every MADE layer on a context (CWNlinear); ``spec.base_log_var`` is log_prob's base
N(0, e^v I) (the references' density code uses v = 1).

Initialisation per configuration from its own seed (float64 draws, then cast), as torchkit's reset_parameters:
affine output layer scale 0 and bias 0 (gated: the gate's bias 2.0, s ~ 0.88); out_to_dsparams W ~ U(-0.001, 0.001),
bias 0 except DSF's a-slices at softplus^-1(1 - delta) (a = 1); DDSF's u_, w_ ~ U(-0.001, 0.001).
"""
from __future__ import annotations

import math

import torch

from core.flows import made, transformers
from core.flows.spec import FlowSpec, ddsf_dims

LOG_2PI = math.log(2 * math.pi)


def made_params(spec: FlowSpec) -> int:
    """How many tensors one flow's MADE holds: [V, g, b] (+ [Ws, Wb] with a context) per layer."""
    return (5 if spec.context else 3) * (spec.hidden_layers + 1)


def params_per_flow(spec: FlowSpec) -> int:
    """How many tensors one flow holds in the parameter list."""
    n = made_params(spec)
    if spec.transformer in ("dsf", "ddsf"):
        n += 2
    if spec.transformer == "ddsf":
        n += 2 * spec.ds_layers
    return n


def _init_one(spec: FlowSpec, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    uniform = lambda shape, lo, hi: torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    out: list[torch.Tensor] = []
    for _ in range(spec.flows):
        p = made.init_made(spec.dim, spec.hidden, spec.hidden_layers, spec.channels, gen, spec.context)
        if spec.transformer in ("maf", "affine-gated"):
            last = p[-5:] if spec.context else p[-3:]  # the output layer's [V, g, b, (Ws, Wb)]
            last[1].zero_()  # output scale (cscale.bias) 0
            last[2].zero_()  # output bias 0 ...
            if spec.transformer == "affine-gated":
                last[2][0, 1::2] = 2.0  # ... the gate's 2.0 (torchkit IAF, realify=sigmoid)
            for w in last[3:]:  # cscale.weight, cbias.weight ~ U(-0.001, 0.001)
                w.copy_(uniform(w.shape, -0.001, 0.001))
        out += p
        if spec.transformer in ("dsf", "ddsf"):
            w = uniform((spec.channels, spec.ds_params), -0.001, 0.001)
            c = torch.zeros(1, spec.ds_params, dtype=torch.float64)
            if spec.transformer == "dsf":
                for i in range(spec.ds_layers):
                    c[0, 3 * spec.ds_dim * i: 3 * spec.ds_dim * i + spec.ds_dim] = transformers.SOFTPLUS_INV_ONE
            out += [w, c]
        if spec.transformer == "ddsf":
            for n_in, n_out in ddsf_dims(spec.ds_dim, spec.ds_layers):
                out += [uniform((spec.ds_dim, n_in), -0.001, 0.001), uniform((n_out, spec.ds_dim), -0.001, 0.001)]
    if spec.final_linear:
        out += [uniform((1, spec.dim), -0.001, 0.001),
                torch.full((1, spec.dim), transformers.SOFTPLUS_INV_ONE, dtype=torch.float64)]
    return out


def init_block(spec: FlowSpec, seeds: list[int], device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """Stacked parameters of ``len(seeds)`` configurations (leaf tensors, requires_grad); configuration k's values
    depend only on ``seeds[k]`` (a block of K equals K runs alone)."""
    per_model = [_init_one(spec, s) for s in seeds]
    return [torch.stack(ts).to(device=device, dtype=dtype).requires_grad_() for ts in zip(*per_model)]


def _context(spec: FlowSpec, context: torch.Tensor | None, k: int, n: int, like: torch.Tensor) -> torch.Tensor | None:
    if not spec.context:
        if context is not None:
            raise ValueError("a context was given to a FlowSpec with context=0")
        return None
    if context is None:  # torchkit BaseFlow.sample's default context: ones
        return torch.ones(k, n, spec.context, dtype=like.dtype, device=like.device)
    return context.expand(k, *context.shape) if context.dim() == 2 else context


def forward(spec: FlowSpec, params: list[torch.Tensor], x: torch.Tensor, context: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (K, N, D) -> (z (K, N, D), log|det dz/dx| (K, N)); ``context`` (N, c) or (K, N, c) when spec.context = c
    (None: ones, as torchkit's BaseFlow.sample)."""
    k, n, dim = x.shape
    context = _context(spec, context, k, n, x)
    layer_masks = made.masks(spec.dim, spec.hidden, spec.hidden_layers, spec.channels, spec.order, x.device, x.dtype)
    logdet = None  # the first flow's log|det| itself, not 0 + it (same values, one op fewer)
    per = params_per_flow(spec)
    n_made = made_params(spec)
    h = x
    for f in range(spec.flows):
        p = params[f * per:(f + 1) * per]
        out = made.made_forward(p[:n_made], layer_masks, h, context=context)  # (K, N, D*C)
        if spec.transformer in ("maf", "affine-gated"):
            out = out.view(k, n, dim, 2)
            h, ld = (transformers.maf if spec.transformer == "maf" else transformers.affine_gated)(h, out)
        else:
            w, c = p[n_made], p[n_made + 1]
            ds = torch.baddbmm(c, out.reshape(k, n * dim, spec.channels), w).view(k, n, dim, -1)  # out_to_dsparams
            if spec.transformer == "dsf":
                h, ld = transformers.dsf(h, ds, spec.ds_layers)
            else:
                h, ld = transformers.ddsf(h, ds, p[n_made + 2:], spec.ds_dim, spec.ds_layers)
        logdet = ld if logdet is None else logdet + ld
        if spec.flip:
            h = h.flip(-1)
    if spec.final_linear:
        m, s = params[spec.flows * per], params[spec.flows * per + 1]
        std = transformers.softplus_d(s)
        h = m + std * h
        logdet = logdet + torch.log(std).sum(-1).expand(k, n)
    return h, logdet


def log_normal(z: torch.Tensor, log_var: float = 0.0) -> torch.Tensor:
    """log N(z; 0, e^log_var I) summed over the last dim."""
    return -0.5 * (z * z).sum(-1) * math.exp(-log_var) - 0.5 * z.shape[-1] * (LOG_2PI + log_var)


def log_prob(spec: FlowSpec, params: list[torch.Tensor], x: torch.Tensor, context: torch.Tensor | None = None
             ) -> torch.Tensor:
    """log p(x) (K, N) = log N(forward(x).z; 0, e^spec.base_log_var I) + log|det|; x (N, D) is shared by the K models,
    (K, N, D) is not."""
    if x.dim() == 2:
        x = x.expand(params[0].shape[0], *x.shape)
    z, logdet = forward(spec, params, x, context)
    return log_normal(z, spec.base_log_var) + logdet


def sample(spec: FlowSpec, params: list[torch.Tensor], n: int, generator: torch.Generator | None = None,
           context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """IAF use: eps ~ N(0, I) (K, n, D), z = forward(eps).z, log q(z) = log N(eps) - log|det| (K, n) (torchkit
    BaseFlow.sample draws standard normal noise whatever the density code's base)."""
    p0 = params[0]
    eps = torch.randn(p0.shape[0], n, spec.dim, generator=generator, dtype=p0.dtype, device=p0.device)
    z, logdet = forward(spec, params, eps, context)
    return z, log_normal(eps) - logdet
