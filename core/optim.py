"""One Adam for every stacked block: K models' tensors updated together, each model with its own learning rate and step count.

A block stacks K models along the first dimension of every parameter
tensor. :class:`BatchedAdam` applies torch.optim.Adam's update (no weight
decay, no amsgrad; ``_single_tensor_adam``'s arithmetic: moments by
``lerp_`` / ``addcmul_``, denominator ``sqrt(v) / sqrt(1 - b2^t) + eps``)
to every model at once, where learning rate and step count ``t`` are
per-model (K,) tensors, so models can be paused (``active`` mask) or
restarted (:meth:`BatchedAdam.reset`) without touching the others. With
K = 1 it equals ``torch.optim.Adam`` (tested).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which every reference here uses
ADAM_EPS = 1e-8


class BatchedAdam:
    """torch.optim.Adam over stacked (K, ...) tensors with per-model learning rates and step counts."""

    def __init__(self, params: Sequence[torch.Tensor], lr, betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS):
        self.params = list(params)
        first = self.params[0]
        self.k = first.shape[0]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lr = torch.as_tensor(lr, dtype=torch.float64).reshape(-1).expand(self.k).to(first.device).clone()
        self.steps = torch.zeros(self.k, dtype=torch.float64, device=first.device)
        self.betas, self.eps = betas, eps

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor] | None = None, active: torch.Tensor | None = None) -> None:
        """One update with ``grads`` (default: each parameter's ``.grad``); models where ``active`` (K,) is False are left alone."""
        grads = grads if grads is not None else [p.grad for p in self.params]
        b1, b2 = self.betas
        if active is None:
            self.steps += 1
            steps = self.steps
        else:
            active = active.to(self.steps.device)
            self.steps += active.double()
            steps = self.steps.clamp(min=1)  # a paused model that never stepped: any finite value, it is masked out
        step_size = self.lr / (1 - b1**steps)
        bc2_sqrt = torch.sqrt(1 - b2**steps)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            if active is not None:
                keep = active.view(shape)
                m_new = m.lerp(g, 1 - b1)
                v_new = v.mul(b2).addcmul_(g, g, value=1 - b2)
                m.copy_(torch.where(keep, m_new, m))
                v.copy_(torch.where(keep, v_new, v))
            else:
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bc2_sqrt.to(p.dtype).view(shape)).add_(self.eps)
            update = m * (-step_size).to(p.dtype).view(shape) / denom
            if active is not None:
                update = update * active.to(p.dtype).view(shape)
            p.add_(update)

    @torch.no_grad()
    def reset(self, mask: torch.Tensor) -> None:
        """Restart Adam for the models in ``mask`` (K,) bool: zero moments and step counts (a re-created optimizer)."""
        mask = mask.to(self.steps.device)
        for m, v in zip(self.m, self.v):
            m[mask] = 0
            v[mask] = 0
        self.steps[mask] = 0
