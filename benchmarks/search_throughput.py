"""Configurations per hour of the rex-vs-irm block search: K = 1 (one configuration per Ray trial) vs the default K.

Both run the real pipeline machinery (Ray Tune trials, Optuna studies in
SQLite, Parquet rows, MLflow child runs) in this process on the same data:
the smoke preset's (embedded digits, smoke steps) and the paper preset's
(MNIST-sized domains from a synthetic 60,000-image source, paper hidden-size
space; ``--paper-steps`` steps per configuration so that the run stays short:
the rate is reported per configuration at that step count).

To say where the time goes it also measures, at the smoke size:
- training alone (``train_block`` in this process, one thread, no Ray), per
  configuration, run one at a time and as one block of K;
- the pipeline at 1 step per configuration, i.e. the per-configuration cost
  outside training that blocks amortize;
and prints the speedup those two imply.

    python benchmarks/search_throughput.py [--configs 48] [--paper-configs 16] [--paper-steps 10]

Ends with ``speedup=<default K / K=1>`` at the smoke size.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import torch

from core.cmnist.shift import build_shifted_cmnist
from core.data import load_digits_source
from core.cmnist.train import config_from_dict, train_block
from pipelines.rex import rex_vs_irm
from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.runtime import init_ray
from pipelines.engine.spec import resolve_settings


def mnist_sized_dir(root: str) -> str:
    """Write a synthetic MNIST-sized training split (IDX) so the run goes through the real loader."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=60000).astype(np.uint8)
    for name, array in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        with gzip.open(os.path.join(root, name), "wb", compresslevel=1) as f:
            f.write(header + array.tobytes())
    return root


def wall_seconds(preset: str, k: int, configs: int, steps: int, data_dir: str | None) -> float:
    """Wall seconds of one search stage of ``configs`` configurations in blocks of ``k`` (a fresh results directory)."""
    overrides = [
        "stages=search", "variants=class", "ps=0.1", "methods=irm", f"num_samples={configs}",
        f"block_size={k}", f"steps={steps}", f"eval_every={steps}",
    ]
    settings = resolve_settings(rex_vs_irm.PIPELINE, preset, overrides)
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        summary = run_sweep(Sweep(rex_vs_irm.PIPELINE, preset, settings, results, data_dir=data_dir, quiet=True))
        wall = time.perf_counter() - start
    assert summary.finished == configs, summary
    return wall


def rate(preset: str, k: int, configs: int, steps: int, data_dir: str | None) -> float:
    """Configurations per hour for one search stage of ``configs`` configurations in blocks of ``k``."""
    return configs / wall_seconds(preset, k, configs, steps, data_dir) * 3600


def marginal_seconds(k: int, configs: int) -> float:
    """Pipeline seconds per extra configuration at 1 training step (smoke data): 2x ``configs`` minus 1x, over ``configs``."""
    return (wall_seconds("smoke", k, 2 * configs, 1, None) - wall_seconds("smoke", k, configs, 1, None)) / configs


def training_seconds(k: int, configs: int, steps: int) -> float:
    """Seconds per configuration of training alone (one thread) on the smoke data, in blocks of ``k``."""
    import optuna

    from core.cmnist.hparams import random_space as irm_space

    domains = build_shifted_cmnist(load_digits_source(), "class", 0.1, seed=0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for number in range(configs):
        trial = study.ask()
        drawn.append(config_from_dict({**trial.params, **irm_space(trial), "seed": number}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for i in range(0, configs, k):
        train_block(domains, "irm", drawn[i : i + k], steps=steps, eval_every=steps, device=torch.device("cpu"))
    torch.set_num_threads(threads)
    return (time.perf_counter() - start) / configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=48, help="configurations per run at the smoke size")
    parser.add_argument("--paper-configs", type=int, default=16)
    parser.add_argument("--paper-steps", type=int, default=10)
    args = parser.parse_args()
    init_ray(num_cpus=os.cpu_count())
    k_default = rex_vs_irm.SETTINGS["block_size"].default
    smoke_steps = rex_vs_irm.SETTINGS["steps"].default
    cpus = os.cpu_count() or 1
    print(f"{cpus} CPUs; default K = {k_default}")

    train = {k: training_seconds(k, 2 * k_default, smoke_steps) for k in (1, k_default)}
    for k, seconds in train.items():
        print(f"training alone, smoke size ({smoke_steps} steps, 1 thread): K={k}: {seconds:.3f} s/configuration")
    overhead = {k: marginal_seconds(k, args.configs) for k in (1, k_default)}
    for k, seconds in overhead.items():
        print(f"pipeline cost outside training (smoke data, 1 step, per added configuration): K={k}: {seconds:.3f} s")
    implied = (train[1] / cpus + overhead[1]) / (train[k_default] / cpus + overhead[k_default])
    limit = cpus * (overhead[1] - 5 * overhead[k_default]) / 4  # training time at which the implied speedup is 5
    reach = f"5 needs training under {limit:.3f} s/configuration" if limit > 0 else "5 is out of reach even without training"
    print(f"speedup these imply at the smoke size: {implied:.2f} (without training: "
          f"{overhead[1] / overhead[k_default]:.2f}; {reach})")

    smoke = {k: rate("smoke", k, args.configs, smoke_steps, None) for k in (1, k_default)}
    for k, value in smoke.items():
        print(f"smoke size (digits, {smoke_steps} steps): K={k}: {value:,.0f} configurations/hour")
    with tempfile.TemporaryDirectory() as data:
        mnist_sized_dir(data)
        paper = {k: rate("paper", k, args.paper_configs, args.paper_steps, data) for k in (1, k_default)}
    for k, value in paper.items():
        print(f"paper size (2 x 25,000 images, {args.paper_steps} steps): K={k}: {value:,.0f} configurations/hour")
    print(f"paper-size speedup={paper[k_default] / paper[1]:.2f}")
    print(f"speedup={smoke[k_default] / smoke[1]:.2f}")


if __name__ == "__main__":
    main()
