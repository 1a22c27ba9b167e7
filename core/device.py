"""Where training runs and how much memory one block may use there (the share of a GPU a trial holds is passed in)."""
from __future__ import annotations

import torch

GPU_MEMORY_SHARE = 0.6  # of the trial's part of a GPU, for one block's training step (data, allocator slack aside)


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or :func:`default_device` for None, "" and "auto"."""
    if device is None or device in ("", "auto"):
        return default_device()
    return torch.device(device)


def block_memory_budget(device: str | torch.device, cpu_gb: float, gpu_fraction: float = 1.0) -> float:
    """Bytes one block's training step may use on ``device``.

    CUDA: ``GPU_MEMORY_SHARE`` of the device's memory times ``gpu_fraction``
    (the part of the GPU the trial holds, in (0, 1]); elsewhere ``cpu_gb`` GiB.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return GPU_MEMORY_SHARE * torch.cuda.get_device_properties(device).total_memory * gpu_fraction
    return cpu_gb * 2**30
