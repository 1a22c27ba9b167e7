"""One Adam for every stacked block: K models' tensors updated together, each model with its own learning rate and step count.

A block stacks K models along the first dimension of every parameter
tensor. :class:`BatchedAdam` applies torch.optim.Adam's update (no weight
decay, no amsgrad; ``_single_tensor_adam``'s arithmetic: moments by
``lerp_`` / ``addcmul_``, bias corrections as Python floats,
denominator ``sqrt(v) / sqrt(1 - b2^t) + eps``) to every model at once,
where learning rate and step count ``t`` are per-model (K,) tensors, so
models can be paused (``active`` mask) or restarted
(:meth:`BatchedAdam.reset`) without touching the others. Each model's
numbers equal a ``torch.optim.Adam`` of its own on CPU, bit for bit
(tests/test_optim.py); nothing is read back from the device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which every reference here uses
ADAM_EPS = 1e-8


def _corrections(betas: tuple[float, float], steps: int) -> torch.Tensor:
    """(2, steps + 1) float64: ``1 - b1**t`` and ``(1 - b2**t) ** 0.5`` for t = 0..steps, as torch.optim.Adam's Python floats.

    (Vectorised float64 ``pow`` on a tensor differs from Python's in the last bit for some t.)
    """
    b1, b2 = betas
    return torch.tensor([[1 - b1**t for t in range(steps + 1)], [(1 - b2**t) ** 0.5 for t in range(steps + 1)]], dtype=torch.float64)


class BatchedAdam:
    """torch.optim.Adam over stacked (K, ...) tensors with per-model learning rates and step counts."""

    def __init__(self, params: Sequence[torch.Tensor], lr, betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS):
        self.params = list(params)
        first = self.params[0]
        self.k = first.shape[0]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lr = torch.as_tensor(lr, dtype=torch.float64).reshape(-1).expand(self.k).to(first.device).clone()
        self.steps = torch.zeros(self.k, dtype=torch.long, device=first.device)  # each model's updates since its (re)start
        self.betas, self.eps = betas, eps
        self._calls = 0  # bounds every model's step count, so the table below never needs the counts back from the device
        self._table = _corrections(betas, 64).to(first.device)

    def _bias_corrections(self, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._calls >= self._table.shape[1]:
            self._table = _corrections(self.betas, 2 * self._calls).to(self._table.device)
        return self._table[0, steps], self._table[1, steps]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor] | None = None, active: torch.Tensor | None = None) -> None:
        """One update with ``grads`` (default: each parameter's ``.grad``); models where ``active`` (K,) is False are left
        alone (parameters, moments and step count; their gradients may be anything, NaN included)."""
        grads = grads if grads is not None else [p.grad for p in self.params]
        b1, b2 = self.betas
        self._calls += 1
        if active is None:
            self.steps += 1
            bc1, bc2_sqrt = self._bias_corrections(self.steps)
        else:
            active = active.to(device=self.steps.device, dtype=torch.bool)
            self.steps += active.long()
            bc1, bc2_sqrt = self._bias_corrections(self.steps.clamp(min=1))  # a paused model that never stepped: masked out
        step_size = self.lr / bc1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            if active is None:
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            else:
                keep = active.view(shape)
                m.copy_(torch.where(keep, m.lerp(g, 1 - b1), m))
                v.copy_(torch.where(keep, v.mul(b2).addcmul_(g, g, value=1 - b2), v))
            denom = (v.sqrt() / bc2_sqrt.to(p.dtype).view(shape)).add_(self.eps)
            update = m * (-step_size).to(p.dtype).view(shape) / denom  # torch's addcdiv_(m, denom, value=-step_size) on CPU
            if active is None:
                p.add_(update)
            else:
                p.copy_(torch.where(keep, p + update, p))

    @torch.no_grad()
    def reset(self, mask: torch.Tensor) -> None:
        """Restart Adam for the models in ``mask`` (K,) bool: zero moments and step counts (a re-created optimizer)."""
        mask = mask.to(device=self.steps.device, dtype=torch.bool)
        for m, v in zip(self.m, self.v):
            shape = (-1,) + (1,) * (m.dim() - 1)
            m.masked_fill_(mask.view(shape), 0)
            v.masked_fill_(mask.view(shape), 0)
        self.steps.masked_fill_(mask, 0)
