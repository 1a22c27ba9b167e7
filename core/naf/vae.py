"""N4 at smoke scale (docs bayes.md §a.1 N4, §d.4): a VAE with a flow posterior, K configurations stacked.

The posterior, as vae_experiments.py's ``inf``: the encoder's last hidden layer c(x) (after ELU) is the context;
z0 = μ(c) + σ(c)·ε, σ = softplus + 1e-4, is the reference's first, context-fed LinearFlow(dimz, dimc) (mean and
softplus-std as linear maps of the context: here the encoder's head, a plain linear map, not torchkit's ResLinear);
then the flows. Two forms of the flows (FlowSpec.context): ``spec.context == 0`` (the recorded smoke runs): parameters
*shared* across images, flips, and core.flows' trailing LinearFlow (a constant elementwise affine the reference does
not have); ``spec.context == hidden`` (naf-vae's ``faithful``): every MADE layer conditioned on c(x) (cMADE with
context_dim = dimc, CWNlinear), flips, no trailing LinearFlow, as the reference. Deviations either way: MLP
encoder / decoder (not the ResConv nets), the encoder's hidden width as the context size (the reference: dimc = 450
after a ResLinear), natural MADE order (the reference's IAFs draw a random order per layer, fixed_order=False).
``posterior="gaussian"`` is the plain VAE. Decoder: Bernoulli logits (last bias −3, as the reference);
dynamic binarisation (a fresh Bernoulli draw of the grey levels per batch). Loss (reference): −log p(x|z) +
max(w·KL, free_bits), KL = log q(z|x) − log p(z) (one sample), w annealed linearly from ``anneal_start`` to 1 over
``anneal_steps``. Evaluation: ELBO (one sample) and the importance-weighted bound log mean_s exp(ELBO_s).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from core.flows import model as flow
from core.flows.spec import FlowSpec

LOG_2PI = math.log(2 * math.pi)
POSTERIORS = ("gaussian", "maf", "affine-gated", "dsf", "ddsf")


def split_images(images: np.ndarray, seed: int = 0, fractions=(0.8, 0.1)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 28, 28) uint8 -> train / validation / test (N_i, 784) grey levels in [0, 1] (a seeded permutation; 10k -> 8k/1k/1k)."""
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(fractions[0] * len(x)), int(fractions[1] * len(x))
    return x[order[:n_train]], x[order[n_train:n_train + n_val]], x[order[n_train + n_val:]]


def _linear(sizes: list[int], k: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Stacked (K, in, out) weights (Glorot-uniform per model) and (K, 1, out) zero biases."""
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = math.sqrt(6.0 / (n_in + n_out))
        out += [(torch.rand(k, n_in, n_out, generator=gen) * 2 - 1) * bound, torch.zeros(k, 1, n_out)]
    return out


def _mlp(params: list[torch.Tensor], x: torch.Tensor, last_activation: bool = False) -> torch.Tensor:
    """ELU between layers, none after the last unless ``last_activation``; x (K, N, in)."""
    n = len(params) // 2
    for i in range(n):
        x = torch.baddbmm(params[2 * i + 1], x, params[2 * i])
        if i < n - 1 or last_activation:
            x = F.elu(x)
    return x


def init_vae(seeds: list[int], z_dim: int, hidden: int, spec: FlowSpec | None, pixels: int = 784) -> dict:
    """Encoder, decoder (stacked over seeds) and the flow's block; every tensor requires grad. A context-conditioned
    flow (``spec.context``) must take the encoder's last hidden layer: spec.context == hidden."""
    if spec is not None and spec.context not in (0, hidden):
        raise ValueError(f"the flow's context ({spec.context}) is the encoder's last hidden layer: {hidden} units")
    enc, dec = [], []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        enc.append(_linear([pixels, hidden, hidden, 2 * z_dim], 1, gen))
        d = _linear([z_dim, hidden, hidden, pixels], 1, gen)
        d[-1].fill_(-3.0)  # the reference's last decoder bias
        dec.append(d)
    stack = lambda per: [torch.cat(ts).requires_grad_() for ts in zip(*per)]
    return {"enc": stack(enc), "dec": stack(dec), "flow": flow.init_block(spec, [1000 + s for s in seeds]) if spec else []}


def all_params(vae: dict) -> list[torch.Tensor]:
    return vae["enc"] + vae["dec"] + vae["flow"]


def elbo_terms(vae: dict, spec: FlowSpec | None, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x|z), KL sample = log q(z|x) − log p(z)), each (K, N·S) for binary x (K, N, 784) and noise eps (K, N·S, Z)
    (S = eps rows per image: x is repeated)."""
    k, n, _ = x.shape
    reps = eps.shape[1] // n
    context = _mlp(vae["enc"][:-2], x, last_activation=True)  # the encoder's last hidden layer (ELU): the context
    out = torch.baddbmm(vae["enc"][-1], context, vae["enc"][-2])  # the head: LinearFlow(dimz, dimc)'s mean and pre-std
    z_dim = eps.shape[-1]
    mu, pre = out[..., :z_dim], out[..., z_dim:]
    sigma = F.softplus(pre) + 1e-4
    mu, sigma = mu.repeat_interleave(reps, 1), sigma.repeat_interleave(reps, 1)
    z = mu + sigma * eps
    log_q = -0.5 * (eps ** 2).sum(-1) - 0.5 * z_dim * LOG_2PI - torch.log(sigma).sum(-1)
    if spec is not None:
        z, logdet = flow.forward(spec, vae["flow"], z, context.repeat_interleave(reps, 1) if spec.context else None)
        log_q = log_q - logdet
    log_pz = -0.5 * (z ** 2).sum(-1) - 0.5 * z_dim * LOG_2PI
    logits = _mlp(vae["dec"], z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.repeat_interleave(reps, 1), reduction="none").sum(-1)
    return log_px, log_q - log_pz


def anneal(step: int, steps: int, start: float) -> float:
    """KL weight: linear from ``start`` to 1 over ``steps`` (the reference: 1e-4 -> 1 over 50,000 iterations)."""
    return min(1.0, start + (1.0 - start) * step / max(1, steps))


@torch.no_grad()
def bounds(vae: dict, spec: FlowSpec | None, x: torch.Tensor, z_dim: int, samples: int, gen: torch.Generator,
           chunk: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ELBO (first sample) and mean importance-weighted bound over ``samples`` (K,), on fixed binarisations of x (N, 784)."""
    k = vae["enc"][0].shape[0]
    elbo, iw = [], []
    xb = torch.bernoulli(x, generator=gen)
    for i in range(0, len(xb), chunk):
        part = xb[i:i + chunk].expand(k, -1, -1)
        eps = torch.randn(k, part.shape[1] * samples, z_dim, generator=gen)
        log_px, kl = elbo_terms(vae, spec, part, eps)
        e = (log_px - kl).view(k, part.shape[1], samples)
        elbo.append(e[..., 0])
        iw.append(torch.logsumexp(e, -1) - math.log(samples))
    return torch.cat(elbo, 1).mean(1), torch.cat(iw, 1).mean(1)


class VaeImages:
    """Grey-level images split train / validation / test (N_i, 784) in [0, 1]; fingerprint and description for reports."""

    def __init__(self, source) -> None:  # source: core.data.ImageSource
        self.train, self.val, self.test = split_images(source.images)
        self.fingerprint = f"{source.fingerprint}/vae-80-10-10"
        self.description = (f"{len(self.train):,} / {len(self.val):,} / {len(self.test):,} train / validation / test images of "
                            f"{source.description or source.name}, dynamically binarised")


def load_images(data_dir: str | None) -> VaeImages:
    """MNIST-format IDX from ``data_dir`` (the test split suffices: 8k/1k/1k), else the embedded scikit-learn digits."""
    from pathlib import Path

    from core.data import DataError, load_digits_source, load_idx_dir

    if data_dir is None:
        return VaeImages(load_digits_source())
    if not Path(data_dir).is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    return VaeImages(load_idx_dir(data_dir))
