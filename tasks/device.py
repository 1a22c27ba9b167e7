"""A trial's device and block memory budget from its config and the share of a GPU Ray gave it (core.device does the rest)."""
from __future__ import annotations

import torch

from core.device import block_memory_budget, resolve_device


def gpu_fraction() -> float:
    """The fraction of a GPU this Ray trial holds (1 outside Ray or without a fractional request)."""
    try:
        import ray

        if ray.is_initialized():
            share = ray.get_runtime_context().get_assigned_resources().get("GPU")
            if share:
                return min(1.0, float(share))
    except Exception:  # no Ray, or not inside a worker: the whole device
        pass
    return 1.0


def trial_device(config: dict) -> torch.device:
    """The config's ``device``, or CUDA when present."""
    return resolve_device(config.get("device"))


def block_memory_bytes(config: dict, device: str | torch.device, cpu_gb: float) -> float:
    """Memory one block (or sub-block) may use: the config's ``block_memory_gb`` when set (> 0), else
    :func:`core.device.block_memory_budget` of ``device`` for this trial's share of the GPU."""
    setting = float(config.get("block_memory_gb") or 0)
    if setting > 0:
        return setting * 2**30
    return block_memory_budget(device, cpu_gb, gpu_fraction())
