"""Trainable for Colored MNIST-style experiments: one flat config (or a block of them) -> Reports.

Config keys (all JSON scalars): ``method`` (a core.methods name),
``risk_reduction`` (method, mean or sum; see core.methods), ``hidden``,
``l2``, ``lr``, ``anneal_iters``, ``penalty_weight``, ``seed`` (model init),
``steps``, ``eval_every``, ``data_seed`` (domain construction), ``data`` (the
image source's fingerprint) and ``variant`` (``standard``, or the
covariate-shift variants ``class``, ``digit``, ``color``, which add
``shift_p``) and, optionally, ``holdout`` (a share of each training domain
held out for training-domain validation: ``val_acc``, ``train1_out_acc``, ...). A config with a ``block`` list trains each entry's own keys
(hidden, l2, lr, anneal_iters, penalty_weight, seed, ...) merged over the
shared ones, as one block of models on one set of domains.

The image source arrives through the object store (``tune.with_parameters``);
domains are built once per worker process, moved to the trial's device
(``device``; default CUDA when present) once, and reused there by every trial
that asks for the same (source, variant, data seed, p, device).

Device keys (all optional): ``device``; ``tf32`` (TF32 products on CUDA,
default on; every result row records the value used as ``tf32``, False on
CPU); ``batched`` (stacked batched kernels for a block, default on CUDA;
see core.cmnist.train.train_block); ``block_grouping`` (pad, width or bucket);
``block_memory_gb`` (the activation memory one sub-block may use; a block over
it is split into sub-blocks run one after another; default
:func:`memory_budget_bytes`: a share of the trial's part of the device).
"""
from __future__ import annotations

from typing import Callable

import torch

from core.cmnist.batched import tf32_enabled
from core.cmnist.domains import Domain, Domains, build_cmnist, hold_out
from core.cmnist.shift import build_shifted_cmnist
from core.data import ImageSource
from core.cmnist.train import config_from_dict, train_block
from tasks.cache import WorkerCache
from tasks.device import block_memory_bytes, trial_device
from tasks.report import Report, configurations, tune_reporter

_DOMAINS: WorkerCache[Domains] = WorkerCache(4)
CPU_BLOCK_MEMORY_GB = 8.0  # default activation budget of one sub-block on CPU


def _shifted(source: ImageSource, variant: str, config: dict) -> Domains:
    """Covariate-shift variant domains at ``config["shift_p"]`` (see core.cmnist.shift)."""
    return build_shifted_cmnist(source, variant, float(config["shift_p"]), int(config["data_seed"]))


DOMAIN_BUILDERS: dict[str, Callable[[ImageSource, dict], Domains]] = {
    "standard": lambda source, config: build_cmnist(source, int(config["data_seed"])),
    "class": lambda source, config: _shifted(source, "class", config),
    "digit": lambda source, config: _shifted(source, "digit", config),
    "color": lambda source, config: _shifted(source, "color", config),
}


def _on_device(domains: Domains, device: torch.device) -> Domains:
    move = lambda d: Domain(d.name, d.x.to(device), d.y.to(device), d.color.to(device))
    return Domains(train=[move(d) for d in domains.train], test=[move(d) for d in domains.test], val=[move(d) for d in domains.val])


def domains_for(source: ImageSource, config: dict, device: torch.device | str = "cpu") -> Domains:
    """The domains a config asks for, on ``device``, from this process's cache when already there."""
    device = torch.device(device)
    variant = config.get("variant", "standard")
    holdout = float(config.get("holdout") or 0.0)
    key = (config.get("data") or source.fingerprint, variant, int(config["data_seed"]), config.get("shift_p"), holdout, str(device))

    def build() -> Domains:
        domains = DOMAIN_BUILDERS[variant](source, config)
        if holdout > 0:
            domains = hold_out(domains, holdout, int(config["data_seed"]))
        return _on_device(domains, device) if device.type != "cpu" else domains

    return _DOMAINS.get(key, build)


def memory_budget_bytes(config: dict, device: torch.device | str) -> float:
    """Activation memory one sub-block may use: ``block_memory_gb`` when set (> 0), else
    :func:`tasks.device.block_memory_bytes` (a share of the trial's part of a GPU; ``CPU_BLOCK_MEMORY_GB`` on CPU)."""
    return block_memory_bytes(config, device, CPU_BLOCK_MEMORY_GB)


def run_cmnist(config: dict, source: ImageSource, report: Callable[[Report], None]) -> list[dict]:
    """Train the configuration (or the block of them) of ``config``; ``report`` gets a Report at every eval step.

    Returns each configuration's final metrics, in block order.
    """
    steps = int(config["steps"])
    configs = [config_from_dict(c) for c in configurations(config)]
    device = trial_device(config)
    tf32 = tf32_enabled(device, config.get("tf32"))

    def on_eval(step: int, rows: list[dict]) -> None:
        report(Report(step=step, final=step == steps - 1, metrics=[dict(row, tf32=tf32) for row in rows]))

    rows = train_block(
        domains_for(source, config, device), config["method"], configs, steps=steps,
        eval_every=int(config.get("eval_every", 100)), on_eval=on_eval, device=device,
        reduction=str(config.get("risk_reduction", "method")), batched=config.get("batched"),
        grouping=str(config.get("block_grouping", "pad")), memory_bytes=memory_budget_bytes(config, device), tf32=tf32,
    )
    return [dict(row, tf32=tf32) for row in rows]


def cmnist_trainable(config: dict, data: ImageSource) -> None:
    """Ray Tune function trainable (use with ``tune.with_parameters(cmnist_trainable, data=source)``)."""
    run_cmnist(config, data, tune_reporter())
