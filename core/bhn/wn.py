"""Weight-normed primary nets whose per-unit scales g come from outside (a hypernet sample, or a point estimate).

Port of BHN's primary net (CW-Huang/BayesianHypernet ``modules.py`` WeightNormLayer / ``stochastic_weight_norm``,
``BHNs.py`` MLPWeightNorm_BHN._get_primary_net): layer l computes ``act(g_l * (h @ (V_l / ||V_l||)^T) + b_l)``, the
direction V_l normalised per output unit over its inputs (for a conv: over (in, kh, kw) per output channel); V and b
are point estimates, g (one per output unit or channel) is the random part. The output layer is weight-normed as
well (softmax outside). V ~ N(0, 0.05^2), b = 0 (WeightNormLayer's lasagne init.Normal(0.05), Constant(0)).

Vectorised over S samples of g: the first layer's normalised product ``x V^T/||V||`` is computed once for the shared
input and rescaled by each sample's g (a broadcast), so S samples cost one matmul plus S elementwise rescalings
there; deeper layers then run on (S, N, .) tensors.

Architectures: ``mlp`` (in -> hidden... -> classes, relu or gelu; gelu is the reference's tanh form ``gelu_fast``,
helpers.py) and ``cnn``, the active-learning net of launch5/6_dk_AL.py (bayes.md B3): 3 conv x 32 filters 4x4
'valid' stride 1 with relu, a 2x2 max-pool after the last, dense 128, classes outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

V_STD = 0.05  # WeightNormLayer's W=lasagne.init.Normal(0.05)
CNN_FILTERS, CNN_KERNEL, CNN_CONVS, CNN_DENSE, CNN_POOL = 32, 4, 3, 128, 2


@dataclass(frozen=True)
class LayerShape:
    kind: str  # "dense" | "conv"
    n_in: int
    n_out: int
    kernel: int = 0


def activation_fn(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return lambda x: F.gelu(x, approximate="tanh")  # helpers.gelu_fast
    raise ValueError(f"activation {name!r} not in ('relu', 'gelu')")


def layer_shapes(arch: str, in_shape: tuple[int, ...], hidden: tuple[int, ...], classes: int) -> list[LayerShape]:
    """The weight-normed layers of an architecture, input to output."""
    if arch == "mlp":
        sizes = [math.prod(in_shape), *hidden, classes]
        return [LayerShape("dense", a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    if arch == "cnn":
        channels, height, width = in_shape if len(in_shape) == 3 else (1, *in_shape)
        out = [LayerShape("conv", channels if i == 0 else CNN_FILTERS, CNN_FILTERS, CNN_KERNEL) for i in range(CNN_CONVS)]
        h, w = height - CNN_CONVS * (CNN_KERNEL - 1), width - CNN_CONVS * (CNN_KERNEL - 1)
        flat = CNN_FILTERS * (h // CNN_POOL) * (w // CNN_POOL)
        return out + [LayerShape("dense", flat, CNN_DENSE), LayerShape("dense", CNN_DENSE, classes)]
    raise ValueError(f"arch {arch!r} not in ('mlp', 'cnn')")


class WNNet(nn.Module):
    """Directions V and biases b of a weight-normed net; scales are passed to :meth:`forward`."""

    def __init__(self, arch: str, in_shape: tuple[int, ...], hidden: tuple[int, ...], classes: int, activation: str,
                 generator: torch.Generator):
        super().__init__()
        self.arch, self.in_shape, self.activation = arch, tuple(in_shape), activation
        self.shapes = layer_shapes(arch, tuple(in_shape), tuple(hidden), classes)
        self.directions = nn.ParameterList()
        self.biases = nn.ParameterList()
        for s in self.shapes:
            shape = (s.n_out, s.n_in) if s.kind == "dense" else (s.n_out, s.n_in, s.kernel, s.kernel)
            self.directions.append(nn.Parameter((torch.randn(*shape, generator=generator, dtype=torch.float64) * V_STD).to(torch.get_default_dtype())))
            self.biases.append(nn.Parameter(torch.zeros(s.n_out)))

    @property
    def scale_sizes(self) -> list[int]:
        """Scales per layer (its output units / channels); their sum is the hypernet's dimension P."""
        return [s.n_out for s in self.shapes]

    @property
    def n_scales(self) -> int:
        return sum(self.scale_sizes)

    def norms(self, i: int) -> torch.Tensor:
        """||V_i|| per output unit (channel): (n_out,)."""
        return self.directions[i].flatten(1).norm(dim=1)

    def direction(self, i: int) -> torch.Tensor:
        """V_i / ||V_i||, each output unit's (channel's) weights of unit norm."""
        v = self.directions[i]
        return v / self.norms(i).view(-1, *([1] * (v.dim() - 1)))

    def split_scales(self, g: torch.Tensor) -> list[torch.Tensor]:
        """(S, P) -> per layer (S, n_out)."""
        return list(g.split(self.scale_sizes, dim=-1))

    def _unit_product(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """h (V/||V||)^T (dense; h (..., in)) or conv2d with the unit-norm filters (h (M, C, H, W)), computed as
        (h V^T) / ||V|| (one division per unit instead of one per weight)."""
        if self.shapes[i].kind == "dense":
            return (h @ self.directions[i].t()) / self.norms(i)
        return F.conv2d(h, self.directions[i]) / self.norms(i).view(-1, 1, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor, dropout: float = 0.0, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Logits (S, N, classes) for x (N, *in_shape) and scales g (S, P); ``dropout`` > 0 drops hidden units after
        each hidden dense layer's activation (CNN: also the pooled features) with an independent mask per sample and
        example, kept units scaled by 1/(1 - p) (lasagne dropout)."""
        act = activation_fn(self.activation)
        scales = self.split_scales(g)
        s_count, n = g.shape[0], x.shape[0]
        last = len(self.shapes) - 1

        def drop(h: torch.Tensor) -> torch.Tensor:
            if dropout <= 0:
                return h
            if h.shape[0] != s_count:
                h = h.expand(s_count, *h.shape)
            keep = torch.rand(h.shape, generator=generator, device=h.device, dtype=h.dtype) >= dropout
            return h * keep / (1.0 - dropout)

        if self.arch == "mlp":
            h = x.reshape(n, -1)
            for i in range(len(self.shapes)):
                pre = self._unit_product(i, h)  # (N, out) for the shared input, then (S, N, out)
                pre = pre * scales[i][:, None, :] + self.biases[i]
                if i == last:
                    return pre
                h = drop(act(pre))
        # cnn: convolutions on (S*N, C, H, W); the first one is shared by the samples
        h = x.reshape(n, *((1, *self.in_shape) if len(self.in_shape) == 2 else self.in_shape))
        shared = True
        for i, shape in enumerate(self.shapes):
            if shape.kind == "conv":
                pre = self._unit_product(i, h)
                if shared:
                    pre = pre.unsqueeze(0)
                else:
                    pre = pre.view(s_count, n, *pre.shape[1:])
                pre = pre * scales[i][:, None, :, None, None] + self.biases[i].view(-1, 1, 1)
                h = act(pre).reshape(s_count * n, *pre.shape[2:])
                shared = False
                if i + 1 < len(self.shapes) and self.shapes[i + 1].kind == "dense":
                    h = F.max_pool2d(h, CNN_POOL).reshape(s_count, n, -1)
                    h = drop(h)
                continue
            pre = self._unit_product(i, h) * scales[i][:, None, :] + self.biases[i]
            if i == last:
                return pre
            h = drop(act(pre))
        raise AssertionError("unreachable")

    @torch.no_grad()
    def data_init(self, x: torch.Tensor, g: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Data-dependent init (BHNs.Base_BHN._init_pnet, WeightNormLayer init): layer by layer on the batch x with
        scales g (P,), standardise each unit's pre-activation ``g * (h V^T/||V||)`` over the batch (and positions):
        set b = -m/stdv and return the per-layer factors 1/stdv (the caller multiplies its g source by them) and the
        means; the next layer sees act((pre - m)/stdv). No dropout."""
        act = activation_fn(self.activation)
        scales = self.split_scales(g[None])
        factors, means = [], []
        h = x.reshape(x.shape[0], -1) if self.arch == "mlp" else x.reshape(
            x.shape[0], *((1, *self.in_shape) if len(self.in_shape) == 2 else self.in_shape))
        for i, shape in enumerate(self.shapes):
            pre = self._unit_product(i, h)
            if shape.kind == "conv":
                pre = pre * scales[i][0].view(-1, 1, 1)
                axes = (0, 2, 3)
                view = (-1, 1, 1)
            else:
                pre = pre * scales[i][0]
                axes = (0,)
                view = (-1,)
            m = pre.mean(axes)
            centred = pre - m.view(*view)
            stdv = centred.pow(2).mean(axes).sqrt()
            self.biases[i].copy_(-m / stdv)
            factors.append(1.0 / stdv)
            means.append(m)
            h = act(centred / stdv.view(*view))
            if shape.kind == "conv" and i + 1 < len(self.shapes) and self.shapes[i + 1].kind == "dense":
                h = F.max_pool2d(h, CNN_POOL).reshape(h.shape[0], -1)
        return factors, means
