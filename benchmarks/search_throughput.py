"""Configurations per hour of the rex-vs-irm block search: K = 1 (one configuration per Ray trial) vs the default K.

Both run the real pipeline machinery (Ray Tune trials, Optuna studies in
SQLite, Parquet rows, MLflow child runs) in this process on the same data:
the smoke preset's (embedded digits, smoke steps) and the paper preset's
(MNIST-sized domains from a synthetic 60,000-image source, paper hidden-size
space; ``--paper-steps`` steps per configuration so that the run stays short:
the rate is reported per configuration at that step count).

    python benchmarks/search_throughput.py [--configs 48] [--paper-configs 16] [--paper-steps 10]

Ends with ``speedup=<default K / K=1>`` at the smoke size.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from core.data import ImageSource
from pipelines import rex_vs_irm
from pipelines.runner import Sweep, run_sweep
from pipelines.runtime import init_ray
from pipelines.spec import resolve_settings


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


def rate(preset: str, k: int, configs: int, steps: int, data_dir: str | None) -> float:
    """Configurations per hour for one search stage of ``configs`` configurations in blocks of ``k``."""
    overrides = [
        "variants=class", "ps=0.1", "methods=irm", "restarts=0", f"num_samples={configs}",
        f"block_size={k}", f"steps={steps}", f"eval_every={steps}",
    ]
    settings = resolve_settings(rex_vs_irm.PIPELINE, preset, overrides)
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        summary = run_sweep(Sweep(rex_vs_irm.PIPELINE, preset, settings, results, data_dir=data_dir, quiet=True))
        wall = time.perf_counter() - start
    assert summary["finished"] == configs, summary
    return configs / wall * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=48, help="configurations per run at the smoke size")
    parser.add_argument("--paper-configs", type=int, default=16)
    parser.add_argument("--paper-steps", type=int, default=10)
    args = parser.parse_args()
    init_ray(num_cpus=os.cpu_count())
    k_default = rex_vs_irm.PRESETS["paper"]["block_size"]
    smoke_steps = rex_vs_irm.PRESETS["smoke"]["steps"]
    print(f"{os.cpu_count()} CPUs; default K = {k_default}")

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
