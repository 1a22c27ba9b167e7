"""FlowSpec: the shape of a block's flow (every configuration of a block shares it; only seeds and lr differ).

Matches torchkit/flows.py's density model (NAF maf_experiments.MAF): ``flows`` x (MADE-conditioned transformer,
then FlipFlow), then LinearFlow. ``hidden_layers`` is maf_experiments' ``num_hid_layers`` (cMADE gets
``num_layers = hidden_layers + 1``); ``ds_dim`` / ``ds_layers`` are ``num_ds_dim`` / ``num_ds_layers``; ``context`` is
cMADE's ``context_dim`` when the context matters (0: none, the density experiments' zero context). torchkit's N1
energy fitting (model_iaf_toy.py: one IAF_DSF, ``sample`` with context ones, no FlipFlow, no LinearFlow) is
``FlowSpec(2, "dsf", flows=1, hidden=64, hidden_layers=3, ds_dim=5, ds_layers=2, flip=False, final_linear=False,
context=1)``. ``base_log_var``: the density experiments (maf_experiments.MAF.density, naf_examples DensityEstimator,
model_maf_toy.py) score z with ``utils.log_normal(z, 0, log_var=1.0)``, a N(0, e I) base (a proper density; with the
final LinearFlow the same model family as N(0, I), but a different start and parametrisation): ``base_log_var=1.0``
reproduces it (without torchkit's 1e-5 in the variance denominator, so the density stays normalised). ``order``:
every flow's MADE input degrees, shared by the block; None is torchkit's ``fixed_order=True`` (natural order, NAF's
density experiments); ``fixed_order=False`` (IAF_DSF's default, N1) draws a random order per model, which a block
reproduces by grouping configurations by their drawn order (for D = 2: (0, 1) or (1, 0)).
"""
from __future__ import annotations

from dataclasses import dataclass

TRANSFORMERS = ("maf", "affine-gated", "dsf", "ddsf")
DELTA = 1e-6  # torchkit/nn.py delta: softplus(.) + delta, sigmoid squash, DSF's x_pre squash


@dataclass(frozen=True)
class FlowSpec:
    """One flow shape. ``transformer`` in TRANSFORMERS; ``flip`` reverses the features after every flow."""

    dim: int
    transformer: str = "dsf"
    flows: int = 1
    hidden: int = 64
    hidden_layers: int = 1
    ds_dim: int = 16
    ds_layers: int = 1
    flip: bool = True
    final_linear: bool = True
    ds_multiplier: int = 3  # torchkit IAF_DSF num_ds_multiplier
    context: int = 0  # cMADE context_dim: 0 = the density experiments' zero context; 1 with context None = ones (N1)
    base_log_var: float = 0.0  # log_prob's base N(0, e^v I); the references' density code passes log_var = 1.0
    order: tuple[int, ...] | None = None  # MADE input degrees (a permutation of range(dim)); None: natural (fixed_order)

    def __post_init__(self):
        if self.transformer not in TRANSFORMERS:
            raise ValueError(f"transformer {self.transformer!r} not in {TRANSFORMERS}")
        if min(self.dim, self.flows, self.hidden, self.hidden_layers, self.ds_dim, self.ds_layers) < 1 or self.context < 0:
            raise ValueError(f"every size of {self} must be >= 1 (context >= 0)")
        if self.order is not None:
            object.__setattr__(self, "order", tuple(int(i) for i in self.order))  # hashable (a JSON list is welcome)
        if self.order is not None and sorted(self.order) != list(range(self.dim)):
            raise ValueError(f"order {self.order} is not a permutation of range({self.dim})")
        if self.transformer in ("dsf", "ddsf") and self.hidden < self.dim:
            raise ValueError("dsf/ddsf need hidden >= dim (the conditioner emits ds_multiplier*(hidden//dim) channels per feature)")

    @property
    def channels(self) -> int:
        """MADE output channels per feature: 2 (shift, scale) for the affine flows, 3*(hidden//dim)*ds_layers for dsf/ddsf."""
        if self.transformer in ("maf", "affine-gated"):
            return 2
        return self.ds_multiplier * (self.hidden // self.dim) * self.ds_layers

    @property
    def ds_params(self) -> int:
        """Transformer parameters per feature out of out_to_dsparams: 3*d per DSF layer; u + w + a + b per DDSF layer."""
        if self.transformer == "dsf":
            return 3 * self.ds_dim * self.ds_layers
        if self.transformer == "ddsf":
            return sum(ddsf_dims(self.ds_dim, self.ds_layers)[i][0] + 3 * self.ds_dim for i in range(self.ds_layers))
        return 0


def ddsf_dims(ds_dim: int, ds_layers: int) -> list[tuple[int, int]]:
    """(in_dim, out_dim) of each DenseSigmoidFlow layer: 1 -> d -> ... -> d -> 1 (torchkit IAF_DDSF)."""
    return [(1 if i == 0 else ds_dim, 1 if i == ds_layers - 1 else ds_dim) for i in range(ds_layers)]
