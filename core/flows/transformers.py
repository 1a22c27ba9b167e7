"""Elementwise monotone transformers of an autoregressive flow, with log|det|, over stacked (K, N, D) inputs.

Each takes x (K, N, D) and the conditioner's per-feature parameters (K, N, D, P) and returns
(y (K, N, D), logdet (K, N)) = the sum over features of log|dy_i/dx_i|.

- :func:`maf`: MAF paper, y = (x - mu) * exp(-alpha), log|det| = -sum alpha.
- :func:`affine_gated`: torchkit/flows.py IAF with realify=nn_.sigmoid: s = sigmoid(.)(1 - delta) + delta/2,
  y = (1 - s) m + s x, log|det| = sum log s.
- :func:`sigmoid_flow` / :func:`dsf`: torchkit/flows.py SigmoidFlow (DSF): y = logit(sum_j w_j sigmoid(a_j x + b_j)),
  a = softplus(.) + delta, w = softmax(.), squash x_pre (1 - delta) + delta/2; log|dy/dx| =
  logsumexp_j[log w_j + log sigmoid(u_j) + log sigmoid(-u_j) + log a_j] + log(1 - delta) - log x_pre - log(1 - x_pre).
- :func:`dense_sigmoid_flow` / :func:`ddsf`: torchkit/flows.py DenseSigmoidFlow (DDSF), Jacobians chained by a
  log-matrix-product (logsumexp over the inner index).

One deliberate difference: torchkit's ``logsigmoid(x) = -(softplus(-x) + delta)`` carries its softplus's +delta,
so its DSF/DDSF log-det is 2e-6 lower per feature and layer than the exact derivative of its own map; we use the
exact ``F.logsigmoid`` (log|det| then equals autograd's to float precision, tests/test_flows.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.flows.spec import DELTA, ddsf_dims

SOFTPLUS_INV_ONE = math.log(math.expm1(1 - DELTA))  # softplus^-1(1 - delta): softplus(.) + delta = 1 (torchkit `inv`)


def softplus_d(x: torch.Tensor) -> torch.Tensor:
    """torchkit/nn.py softplus: softplus(x) + delta (strictly positive)."""
    return F.softplus(x) + DELTA


def sigmoid_d(x: torch.Tensor) -> torch.Tensor:
    """torchkit/nn.py sigmoid: sigmoid(x) (1 - delta) + delta/2 (in (0, 1) strictly)."""
    return torch.sigmoid(x) * (1 - DELTA) + 0.5 * DELTA


def maf(x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out (K, N, D, 2) = (mu, alpha): y = (x - mu) exp(-alpha), log|det| = -sum alpha (MAF, Papamakarios et al. 2017)."""
    mu, alpha = out[..., 0], out[..., 1]
    return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)


def affine_gated(x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out (K, N, D, 2) = (m, pre-s): y = (1 - s) m + s x, s = sigmoid_d(pre-s), log|det| = sum log s (torchkit IAF)."""
    m, s = out[..., 0], sigmoid_d(out[..., 1])
    return (1 - s) * m + s * x, torch.log(s).sum(-1)


def sigmoid_flow(x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DSF layer: p (K, N, D, 3d) = pre-activations of (a, b, w) in that order (torchkit SigmoidFlow's slices)."""
    pa, b, pw = p.split(p.shape[-1] // 3, -1)  # one split (its backward is one cat), not three zero-filled slices
    a = softplus_d(pa)
    u = a * x[..., None] + b
    x_pre = (torch.softmax(pw, -1) * torch.sigmoid(u)).sum(-1)
    x_sq = x_pre * (1 - DELTA) + 0.5 * DELTA
    y = torch.log(x_sq) - torch.log1p(-x_sq)
    logj = torch.logsumexp(torch.log_softmax(pw, -1) + F.logsigmoid(u) + F.logsigmoid(-u) + torch.log(a), -1)
    logdet = logj + math.log(1 - DELTA) - torch.log(x_sq) - torch.log1p(-x_sq)
    return y, logdet.sum(-1)


def dsf(x: torch.Tensor, p: torch.Tensor, ds_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ds_layers`` DSF layers composed; p (K, N, D, 3d * ds_layers), layer l's slice [3d l, 3d (l+1)) (IAF_DSF)."""
    logdet = None
    for pl in (p,) if ds_layers == 1 else p.split(p.shape[-1] // ds_layers, -1):
        x, ld = sigmoid_flow(x, pl)
        logdet = ld if logdet is None else logdet + ld
    return x, logdet


def dense_sigmoid_flow(h: torch.Tensor, logj_prev: torch.Tensor | None, p: torch.Tensor, u_: torch.Tensor, w_: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDSF layer per feature, in_dim -> d -> out_dim (torchkit DenseSigmoidFlow).

    h (K, N, D, in); logj_prev (K, N, D, in, 1): log dh/dx so far, None when h is the flow's input (log dh/dx = 0,
    in = 1); p (K, N, D, 3d + in) = (a, b, w offsets, u offsets); u_ (K, d, in), w_ (K, out, d): the layer's
    unconditional weights. h' = logit(w . sigmoid(a * (u . h) + b)) with u, w row-softmaxed, a = softplus_d(. +
    softplus^-1(1 - delta)). Returns h' (K, N, D, out), log dh'/dx (K, N, D, out, 1).

    With in = 1 the softmax over u's one input is exactly 1 (its log exactly 0), so u . h = h and the per-example
    softmax is skipped; u_ stays in the graph through softmax(u_) = 1 (its gradient exactly 0, as torchkit's). With
    logj_prev None the chain rule's logsumexp over one input of log 0 is skipped (it returns its argument exactly).
    Both leave every value and gradient bit for bit as the general formula (benchmarks/naf_tabular_step.py checks).
    """
    d = u_.shape[-2]
    n_in = u_.shape[-1]
    pa, b, pw, pu = p.split([d, d, d, n_in], -1)  # one split (its backward is one cat), not four zero-filled slices
    pre_w = w_[:, None, None] + pw[..., None, :]  # (K, N, D, out, d)
    a = softplus_d(pa + SOFTPLUS_INV_ONE)  # (K, N, D, d)
    if n_in == 1:
        pre = h * torch.softmax(u_, -1).view(u_.shape[0], 1, 1, d) * a + b  # (K, N, D, d); softmax(u_) is ones
    else:
        pre_u = u_[:, None, None] + pu[..., None, :]  # (K, N, D, d, in)
        pre = (torch.softmax(pre_u, -1) * h[..., None, :]).sum(-1) * a + b  # (K, N, D, d)
    x_pre = (torch.softmax(pre_w, -1) * torch.sigmoid(pre)[..., None, :]).sum(-1)  # (K, N, D, out)
    x_sq = x_pre * (1 - DELTA) + 0.5 * DELTA
    h_new = torch.log(x_sq) - torch.log1p(-x_sq)
    # log dh'_o/dh_i = logsumexp_j [log w_oj + log s'(pre_j) + log a_j + log u_ji] + log(1-delta) - log x_sq_o (1 - x_sq_o)
    inner = torch.log_softmax(pre_w, -1) + (F.logsigmoid(pre) + F.logsigmoid(-pre) + torch.log(a))[..., None, :]
    if n_in == 1:
        logj = torch.logsumexp(inner, -1, keepdim=True)  # (K, N, D, out, 1): log u_j0 = 0
    else:
        logj = torch.logsumexp(inner[..., None] + torch.log_softmax(pre_u, -1)[..., None, :, :], -2)  # (K, N, D, out, in)
    logj = logj + math.log(1 - DELTA) - (torch.log(x_sq) + torch.log1p(-x_sq))[..., None]
    if logj_prev is None:  # log dh/dx = 0 over one input: the chain rule below would return logj itself
        return h_new, logj
    # chain rule in log space: log (J_new @ J_prev) = logsumexp_i [logj_oi + logj_prev_i0]
    logj = torch.logsumexp(logj[..., None] + logj_prev[..., None, :, :], -2)  # (K, N, D, out, 1)
    return h_new, logj


def ddsf(x: torch.Tensor, p: torch.Tensor, uw: list[torch.Tensor], ds_dim: int, ds_layers: int
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """DDSF stack 1 -> d -> ... -> 1 per feature; p (K, N, D, sum_l (3d + in_l)), uw = [u_0, w_0, u_1, w_1, ...]."""
    dims = ddsf_dims(ds_dim, ds_layers)
    layers = (p,) if ds_layers == 1 else p.split([3 * ds_dim + n_in for n_in, _ in dims], -1)
    h, logj = x[..., None], None
    for i, pl in enumerate(layers):
        h, logj = dense_sigmoid_flow(h, logj, pl, uw[2 * i], uw[2 * i + 1])
    return h[..., 0], logj[..., 0, 0].sum(-1)
