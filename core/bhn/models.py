"""BHN models and their baselines over one weight-normed primary net (bayes.md a.2, d.6-d.8).

``model`` in BHNSpec:
- ``bhn``: the scales g of the WN net come from a hypernet q(g) (hypernet.py; ``posterior`` + ``coupling``;
  ``mean-field`` / coupling 0 is Bayes by backprop over g), BHNs.py MLPWeightNorm_BHN;
- ``map``: the same WN net with g a point estimate (optional L2 ``l2``); a deterministic net, so its S samples are
  copies;
- ``mcdropout``: the same WN net, dropout p after every hidden layer, kept at test (experiment_MLP_WN.MCdropout_MLP:
  there plain dense layers, here the WN parametrisation with point g, the same function class);
- ``ensemble``: ``members`` independently initialised MAP nets (Lakshminarayanan et al.), trained side by side on
  the same minibatches (their losses summed, gradients clipped per member); sample s is member s mod members, so
  S a multiple of members gives the ensemble's mean and spread exactly.

:func:`init_model` applies the data-dependent WN init (BHNs.Base_BHN._init_pnet) on <= 64 images;
:func:`sample_probs` is the MC predictive (utils.MCpred / evaluate_model: softmax outputs per sample of g, dropout
masks or members, averaged by the caller).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.bhn import hypernet as hn
from core.bhn.wn import WNNet

MODELS = ("map", "mcdropout", "bhn", "ensemble")
POSTERIORS = ("mean-field", "realnvp", "iaf", "dsf")  # BHNSpec.posterior (hypernet.py also has "linear", for toys)
INIT_BATCH = 64  # experiment_MLP_WN.py: init_batch_size = min(64, size)
INIT_ROUNDS = 8
CLIP_LO, CLIP_HI = 0.001, 0.999  # BHNs.py: T.clip(softmax, 0.001, 0.999)


@dataclass(frozen=True)
class BHNSpec:
    """One model's shape (JSON-able via dataclasses.asdict)."""

    arch: str = "mlp"  # "mlp" | "cnn"
    in_shape: tuple[int, ...] = (28, 28)
    hidden: tuple[int, ...] = (200,)
    classes: int = 10
    activation: str = "relu"  # "relu" | "gelu"
    model: str = "bhn"  # MODELS
    posterior: str = "realnvp"  # "mean-field" | "realnvp" | "iaf" | "dsf"
    coupling: int = 4
    flow_hidden: int = 200
    dropout: float = 0.5
    prior_lambda: float = 1.0
    noise_std: float = 1.0
    l2: float = 0.0
    members: int = 5

    def __post_init__(self):
        object.__setattr__(self, "in_shape", tuple(int(i) for i in self.in_shape))
        object.__setattr__(self, "hidden", tuple(int(i) for i in self.hidden))
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} not in {MODELS}")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"posterior {self.posterior!r} not in {POSTERIORS}")
        if self.arch not in ("mlp", "cnn"):
            raise ValueError(f"arch {self.arch!r} not in ('mlp', 'cnn')")
        if self.model == "ensemble" and self.members < 1:
            raise ValueError("an ensemble needs members >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


class BHNModel(nn.Module):
    """nets: one WNNet (``members`` for an ensemble); scales: point g per net (map / mcdropout / ensemble);
    hypernet: q(g) (bhn)."""

    def __init__(self, spec: BHNSpec, seed: int):
        super().__init__()
        self.spec = spec
        gen = torch.Generator().manual_seed(int(seed))
        count = spec.members if spec.model == "ensemble" else 1
        self.nets = nn.ModuleList([WNNet(spec.arch, spec.in_shape, spec.hidden, spec.classes, spec.activation, gen)
                                   for _ in range(count)])
        self.n_scales = self.nets[0].n_scales
        self.hypernet: hn.Hypernet | None = None
        self.scales = nn.ParameterList()
        if spec.model == "bhn":
            self.hypernet = hn.init_hypernet(self.n_scales, spec.posterior, spec.coupling,
                                             int(torch.randint(0, 2**31 - 1, (1,), generator=gen)), spec.flow_hidden,
                                             spec.noise_std)
        else:
            for _ in range(count):
                self.scales.append(nn.Parameter(torch.ones(self.n_scales)))

    def member_groups(self) -> list[list[nn.Parameter]]:
        """Parameters trained as one unit (gradient clipping acts per group): an ensemble's members, else all."""
        if self.spec.model != "ensemble":
            return [list(self.parameters())]
        return [list(net.parameters()) + [g] for net, g in zip(self.nets, self.scales)]


def sample_scales(model: BHNModel, samples: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """bhn: (g (S, P), log q(g) (S,)) from the hypernet."""
    if model.hypernet is None:
        raise ValueError(f"a {model.spec.model} model has no posterior over its scales")
    return hn.hypernet_sample(model.hypernet, samples, generator)


def logits(model: BHNModel, x: torch.Tensor, samples: int, generator: torch.Generator | None = None,
           g: torch.Tensor | None = None, train: bool = False) -> torch.Tensor:
    """Logits (S, N, C): bhn with S draws of g (or the given g (S, P)); mcdropout with S dropout masks; map S
    copies; ensemble member s mod members. ``train``: dropout draws one mask per example (always on for mcdropout)."""
    spec = model.spec
    if spec.model == "bhn":
        if g is None:
            g = sample_scales(model, samples, generator)[0]
        return model.nets[0](x, g)
    if spec.model == "mcdropout":
        return model.nets[0](x, model.scales[0].expand(samples, -1), dropout=spec.dropout, generator=generator)
    if spec.model == "map":
        return model.nets[0](x, model.scales[0][None]).expand(samples, -1, -1)
    members = len(model.nets)
    outs = [net(x, g_m[None]) for net, g_m in zip(model.nets, model.scales)]
    return torch.cat([outs[s % members] for s in range(samples)], 0)


def sample_probs(model: BHNModel, x: torch.Tensor, samples: int, generator: torch.Generator | None = None,
                 clipped: bool = False, chunk: int | None = None) -> torch.Tensor:
    """Predictive probabilities per MC sample (S, N, C); the MC predictive is their mean over dim 0 (MCpred).
    Softmax rows sum to 1; ``clipped=True`` gives the reference's predict_proba (clipped to [0.001, 0.999]).
    Differentiable in x (FGS). Samples are taken ``chunk`` at a time (default: about 2^24 hidden floats)."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    if chunk is None:
        width = max(max(s.n_out for s in model.nets[0].shapes), 1)
        if model.spec.arch == "cnn":
            width *= 25 * 25
        chunk = max(1, (1 << 24) // max(1, x.shape[0] * width))
    if model.spec.model == "ensemble":
        chunk = max(chunk, len(model.nets))
        chunk -= chunk % len(model.nets)
    parts = []
    for start in range(0, samples, chunk):
        s = min(chunk, samples - start)
        parts.append(torch.softmax(logits(model, x, s, generator), -1))
    probs = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
    return probs.clamp(CLIP_LO, CLIP_HI) if clipped else probs


@torch.no_grad()
def data_dependent_init(model: BHNModel, x_init: torch.Tensor) -> None:
    """BHNs.Base_BHN._init_pnet on <= 64 images: each WN layer's pre-activation standardised over the batch
    (b = -m/stdv; g multiplied by 1/stdv). Point models multiply their g. bhn: g is the hypernet's output at eps = 0,
    and the LinearFlowLayer's shift is moved until that output equals g/stdv (coupling 0: shift * 1/stdv, the
    reference's update). The reference multiplies the shift by the factors in output order, with the g of one eps
    draw: through its PermuteLayers each factor reaches another unit (g ~ 1e3 when we replicated it), and a flow's
    additive offsets are not rescaled; we follow each unit back through the permutations (Hypernet.output_sources)
    and correct the shift for INIT_ROUNDS rounds (the flows are near the identity at init)."""
    x_init = x_init[:INIT_BATCH]
    if model.hypernet is not None:
        g0 = hn.hypernet_mean_path(model.hypernet)
        factors, _ = model.nets[0].data_init(x_init, g0)
        target = g0 * torch.cat(factors)
        shift, sources = model.hypernet.shift(), model.hypernet.output_sources()
        for _ in range(INIT_ROUNDS):  # coupling 0: exact in one round (shift * factors, as the reference)
            shift[sources] += target - hn.hypernet_mean_path(model.hypernet)
        return
    for net, g in zip(model.nets, model.scales):
        factors, _ = net.data_init(x_init, g.detach())
        g.mul_(torch.cat(factors))


def init_model(spec: BHNSpec, x_init: torch.Tensor | None, seed: int) -> BHNModel:
    """A model drawn from ``seed`` alone, data-dependently initialised on x_init[:64] (None: no re-init, the
    reference's reinit 0). experiment_MLP_WN.py passes the last min(64, size) training images."""
    model = BHNModel(spec, seed)
    if x_init is not None:
        data_dependent_init(model, x_init.to(model.nets[0].biases[0].dtype))
    return model
