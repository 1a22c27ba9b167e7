"""The hypernet q(theta): a normalizing flow from noise to a parameter vector (BHN's weight-norm scales, or a toy's theta).

Port of BHNs.py MLPWeightNorm_BHN._get_hyper_net (CW-Huang/BayesianHypernet): eps ~ N(0, noise_std^2 I_P) ->
LinearFlowLayer (elementwise y = x (exp(w) + 0.001) + b, w ~ N(-7, 0.01^2), b ~ N(0, 0.01^2)) -> then by posterior:

- ``mean-field`` (or any posterior with coupling 0): nothing more, a diagonal Gaussian (Bayes by backprop);
- ``realnvp``: ``coupling`` CoupledDenseLayers (1 hidden relu layer of flow_hidden units; s = exp(.) + 0.001),
  a fixed random permutation (PermuteLayer, never the identity) before every layer but the first;
- ``iaf``: IAFDenseLayer with L = coupling MADE layers (each its own fixed order in the reference; here layer l
  sees the features in natural order for even l, reversed for odd l);
- ``dsf``: ``coupling`` IAF-direction DSF flows of core/flows/model.py (NAF's transformer in BHN's hypernet, bayes.md
  d.5; no reference has it): MADE hidden max(flow_hidden, P), ds_dim 16, one DSF block per flow, flip after each;
- ``linear`` (toys only, hypernet_trainer.simple_test's theta = W eps + b): theta = W (s eps) + b with the
  LinearFlowLayer's scale s and shift b, W a full matrix (init identity), log|det| = sum log s + log|det W|. The
  shift comes after W (with it before W, dL/dW carries the mean's MC noise: BHN-eval saw the covariance stall).

The flow layers are core/flows/coupling.py's (K = 1 of its stacked parameters) and core/flows/model.py's; nothing
here re-implements a flow.

log q(theta) = log N(eps; 0, noise_std^2 I) - sum log|det|. The reference drops the eps density (``logqw = -logdets``,
"constants are neglected", BHNs.py _get_elbo): it does not depend on the parameters, so gradients are identical;
we keep it so log q is a proper log density (the KL estimate and toy KL(q||p) are in nats).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from core.flows import coupling as cf
from core.flows import model as flow_model
from core.flows.spec import FlowSpec

POSTERIORS = ("mean-field", "realnvp", "iaf", "dsf", "linear")
DSF_DIM = 16  # NAF's num_ds_dim default
LOG_2PI = math.log(2 * math.pi)


def _params(tensors: list[torch.Tensor]) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter(t.detach().clone()) for t in tensors])


class Hypernet(nn.Module):
    """q(theta) over ``dim`` parameters; :func:`hypernet_sample` draws from it."""

    def __init__(self, dim: int, posterior: str = "realnvp", coupling: int = 4, seed: int = 0, flow_hidden: int = 200,
                 noise_std: float = 1.0):
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior {posterior!r} not in {POSTERIORS}")
        if coupling < 0:
            raise ValueError("coupling must be >= 0")
        self.dim, self.noise_std = int(dim), float(noise_std)
        self.posterior = "mean-field" if posterior == "mean-field" or (coupling == 0 and posterior != "linear") else posterior
        self.coupling = 0 if self.posterior == "mean-field" else int(coupling)
        gen = torch.Generator().manual_seed(int(seed))
        dtype = torch.get_default_dtype()  # parameters in the default dtype (float64 under tests' float64 fixture)
        seeds = lambda: [int(torch.randint(0, 2**31 - 1, (1,), generator=gen))]
        self.linear = _params(cf.init_linear(self.dim, seeds(), dtype=dtype))  # [w (1, 1, P), b (1, 1, P)]
        self.flows = nn.ParameterList()
        self.dsf_spec: FlowSpec | None = None
        perms = []
        if self.posterior == "realnvp":
            if self.dim < 2:
                raise ValueError("realnvp needs dim >= 2")
            for c in range(self.coupling):
                self.flows.extend(_params(cf.init_coupling(self.dim, flow_hidden, seeds(), dtype=dtype)))
                if c > 0:
                    perm = torch.randperm(self.dim, generator=gen)
                    while torch.equal(perm, torch.arange(self.dim)):  # PermuteLayer redraws the identity
                        perm = torch.randperm(self.dim, generator=gen)
                    perms.append(perm)
        elif self.posterior == "iaf":
            for _ in range(self.coupling):
                self.flows.extend(_params(cf.init_iaf(self.dim, flow_hidden, seeds(), dtype=dtype)))
        elif self.posterior == "dsf":
            self.dsf_spec = FlowSpec(self.dim, "dsf", flows=self.coupling, hidden=max(flow_hidden, self.dim),
                                     hidden_layers=1, ds_dim=DSF_DIM, ds_layers=1, flip=True, final_linear=False)
            self.flows.extend(_params(flow_model.init_block(self.dsf_spec, seeds(), dtype=dtype)))
        elif self.posterior == "linear":
            self.flows.append(nn.Parameter(torch.eye(self.dim, dtype=dtype)))
        self.register_buffer("perms", torch.stack(perms) if perms else torch.zeros(0, self.dim, dtype=torch.long))

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eps (n, D) -> (theta (n, D), sum of log|det dtheta/deps| (n,))."""
        h, logdet = cf.linear_forward(list(self.linear), eps[None])
        flows = list(self.flows)
        if self.posterior == "realnvp":
            for c in range(self.coupling):
                if c > 0:
                    h = h[..., self.perms[c - 1]]
                h, ld = cf.coupling_forward(flows[6 * c:6 * c + 6], h)
                logdet = logdet + ld
        elif self.posterior == "iaf":
            per = len(flows) // self.coupling
            for c in range(self.coupling):
                if c % 2:
                    h, ld = cf.iaf_forward(flows[per * c:per * c + per], cf.flip(h))
                    h = cf.flip(h)
                else:
                    h, ld = cf.iaf_forward(flows[per * c:per * c + per], h)
                logdet = logdet + ld
        elif self.posterior == "dsf":
            h, ld = flow_model.forward(self.dsf_spec, flows, h)
            logdet = logdet + ld
        elif self.posterior == "linear":
            shift = self.linear[1]
            h = (h - shift) @ flows[0].t() + shift  # theta = W (s eps) + b: the shift after W (simple_test's z W + b)
            logdet = logdet + torch.linalg.slogdet(flows[0])[1]
        return h[0], logdet[0]

    def base_log_prob(self, eps: torch.Tensor) -> torch.Tensor:
        """log N(eps; 0, noise_std^2 I), summed over the features."""
        var = self.noise_std ** 2
        return -0.5 * (eps * eps).sum(-1) / var - 0.5 * self.dim * (LOG_2PI + math.log(var))

    def output_sources(self) -> torch.Tensor:
        """For each output feature j, the LinearFlowLayer feature that the flow's permutations carry to j (at init
        the coupling / IAF / DSF layers are near the identity, so theta_j ~ the linear layer's output there)."""
        idx = torch.arange(self.dim)
        if self.posterior == "realnvp":
            for perm in self.perms:
                idx = idx[perm]
        elif self.posterior == "dsf" and self.coupling % 2:
            idx = idx.flip(0)
        return idx

    def shift(self) -> torch.Tensor:
        """The LinearFlowLayer's shift b (P,): the data-dependent init rescales it (BHNs._init_pnet)."""
        return self.linear[1].view(-1)


def init_hypernet(dim: int, posterior: str = "realnvp", coupling: int = 4, seed: int = 0, flow_hidden: int = 200,
                  noise_std: float = 1.0) -> Hypernet:
    """A hypernet over ``dim`` parameters (toys: any small theta; BHN: the P weight-norm scales)."""
    return Hypernet(dim, posterior, coupling, seed, flow_hidden, noise_std)


def hypernet_sample(hnet: Hypernet, n: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws: (theta (n, D), log q(theta) (n,)), differentiable in the hypernet's parameters."""
    p0 = hnet.linear[0]
    eps = torch.randn(n, hnet.dim, generator=generator, dtype=p0.dtype, device=p0.device) * hnet.noise_std
    theta, logdet = hnet.transform(eps)
    return theta, hnet.base_log_prob(eps) - logdet


def hypernet_mean_path(hnet: Hypernet) -> torch.Tensor:
    """theta at eps = 0 (D,): the data-dependent init's g (for coupling 0 the Gaussian's mean)."""
    p0 = hnet.linear[0]
    return hnet.transform(torch.zeros(1, hnet.dim, dtype=p0.dtype, device=p0.device))[0][0]
