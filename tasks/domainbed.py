"""Trainable for the DomainBed experiment: one run (or a block of runs) -> a Report at every checkpoint.

Config keys (flat JSON scalars): ``dataset`` (ColoredMNIST, RotatedMNIST),
``method`` (a core.methods DomainBed entry), ``test_envs`` ("0" or "0,1"),
``hparams_seed``, ``trial_seed``, ``seed``, DomainBed's hyperparameter names
(``lr``, ``batch_size``, ``irm_lambda``, ``irm_penalty_anneal_iters``,
``vrex_lambda``, ``vrex_penalty_anneal_iters``, ``groupdro_eta``,
``mmrex_lambda``, ``mmrex_penalty_anneal_iters``), ``steps``,
``checkpoint_freq``, ``holdout_fraction``, ``width`` (channel multiplier of
the ConvNet, 1 = DomainBed's), ``anneal_scale`` (the anneal step used is
int(drawn * anneal_scale); 1 = DomainBed's), ``data`` (the source's
fingerprint). A config with a ``block`` list trains each entry merged over
the shared keys, as one stacked block (core.domainbed.train.train_block).

Every checkpoint reports each run's ``env{i}_in_acc`` / ``env{i}_out_acc``
(the records the selection rules read), its loss, risk and penalty; the last
report adds the run's own training-domain validation choice: ``val_acc``
(best mean out-split accuracy of its training environments over the
checkpoints), ``test_acc`` (the in-split accuracy of its first test
environment there) and ``val_step``.

Device keys (optional): ``device`` (default CUDA when present), ``stacked``
(one grouped-convolution pass per group; default on CUDA), ``block_memory_gb``
(default: a share of the trial's part of the device, :func:`tasks.device.block_memory_bytes`).
"""
from __future__ import annotations

from typing import Callable

import torch

from core.data import ImageSource
from core.domainbed import data as dbdata
from core.domainbed.train import run_from_config, train_block
from tasks.cache import WorkerCache
from tasks.device import block_memory_bytes, trial_device
from tasks.report import Report, configurations, tune_reporter

_BASES: WorkerCache[dbdata.BaseImages] = WorkerCache(2)
CPU_BLOCK_MEMORY_GB = 6.0  # default training memory of one group on CPU


def base_for(source: ImageSource, dataset: str, device: torch.device) -> dbdata.BaseImages:
    """The dataset's base images of ``source`` on ``device``, built once per worker process (rotations included)."""
    return _BASES.get((source.fingerprint, dataset, str(device)), lambda: dbdata.base_images(source, dataset).to(device))


def run_summary(curve: list[dict], test_envs: list[int], n_envs: int) -> dict:
    """The run's training-domain validation choice over its checkpoints: val_acc, test_acc (first test env), val_step."""
    val_envs = [i for i in range(n_envs) if i not in test_envs]
    best = max(curve, key=lambda r: sum(r[f"env{i}_out_acc"] for i in val_envs) / len(val_envs))  # first of equals
    return {"val_acc": sum(best[f"env{i}_out_acc"] for i in val_envs) / len(val_envs),
            "test_acc": best[f"env{test_envs[0]}_in_acc"], "val_step": best["step"]}


def run_domainbed(config: dict, source: ImageSource, report: Callable[[Report], None]) -> list[dict]:
    """Train the config's run or block; ``report`` gets a Report at every checkpoint. Returns the final rows, in order."""
    runs = [run_from_config(c) for c in configurations(config)]
    steps = int(config["steps"])
    device = trial_device(config)
    curves: list[list[dict]] = [[] for _ in runs]
    n_envs = len(dbdata.ENVIRONMENTS[runs[0].dataset])

    def on_checkpoint(step: int, rows: list[dict]) -> None:
        final = step == steps - 1
        out = []
        for curve, run, row in zip(curves, runs, rows):
            row = dict(row, anneal_used=run.anneal_iters)
            curve.append(row)
            out.append({**row, **run_summary(curve, list(run.test_envs), n_envs)} if final else row)
        report(Report(step=step, final=final, metrics=out))

    train_block(
        base_for(source, runs[0].dataset, device), runs, steps=steps, checkpoint_freq=int(config["checkpoint_freq"]),
        holdout_fraction=float(config.get("holdout_fraction", dbdata.HOLDOUT_FRACTION)), width=float(config.get("width", 1.0)),
        device=device, on_checkpoint=on_checkpoint, memory_bytes=block_memory_bytes(config, device, CPU_BLOCK_MEMORY_GB), stacked=config.get("stacked"),
    )
    return [{**curve[-1], **run_summary(curve, list(run.test_envs), n_envs)} for curve, run in zip(curves, runs)]


def domainbed_trainable(config: dict, data: ImageSource) -> None:
    """Ray Tune function trainable (``tune.with_parameters(domainbed_trainable, data=source)``)."""
    run_domainbed(config, data, tune_reporter())
