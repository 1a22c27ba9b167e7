"""Time per training step of the cmnist trainable vs a plain loop written like the IRM reference.

Paper configuration: IRM's published hyperparameters (hidden 390), full batch,
MNIST-sized domains (2 x 25,000 training images, 10,000 test) built from a
synthetic MNIST-sized source by default (timing does not depend on pixel
values) or from ``--data-dir``. Both loops run in this process on the same
domains; the reference evaluates the test domain (with its IRM penalty)
every step, ours only at eval steps (the paper preset's every 25 steps).

    python benchmarks/cmnist_step.py [--steps 30] [--data-dir DIR]

Ends with ``ratio=<ours / reference loop>`` (below 1: ours is faster).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.cmnist.domains import build_cmnist
from core.data import ImageSource, load_idx_dir
from core.cmnist.reference import reference_train
from core.cmnist.hparams import IRM as CMNIST_IRM
from core.cmnist.train import config_from_dict
from pipelines.rex.cmnist_table import PRESETS
from tasks.cmnist import run_cmnist


def mnist_sized_source() -> ImageSource:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60000, 28, 28), dtype=np.uint8)
    return ImageSource("synthetic-mnist", images, rng.integers(0, 10, size=60000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--method", default="irm")
    args = parser.parse_args()

    source = load_idx_dir(args.data_dir) if args.data_dir else mnist_sized_source()
    config = dict(CMNIST_IRM, method=args.method, seed=0, data_seed=0, steps=args.steps, risk_reduction="mean",
                  eval_every=PRESETS["paper"]["eval_every"], variant="standard", data=source.fingerprint)
    domains = build_cmnist(source, 0)
    print(f"source {source.name}: train domains {[len(d.y) for d in domains.train]}, test {len(domains.test[0].y)}; "
          f"method {args.method}, hidden {config['hidden']}, {args.steps} steps, torch threads {torch.get_num_threads()}")

    # Warm up both paths (allocator, kernels), then time them alternately.
    run_cmnist(dict(config, steps=2), source, lambda row: None)
    reference_train(domains, args.method, config_from_dict(config), steps=2)
    timings = {"ours": [], "reference": []}
    for _ in range(2):
        start = time.perf_counter()
        run_cmnist(config, source, lambda row: None)
        timings["ours"].append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        reference_train(domains, args.method, config_from_dict(config), steps=args.steps)
        timings["reference"].append((time.perf_counter() - start) / args.steps)
    ours, ref = min(timings["ours"]), min(timings["reference"])
    print(f"ours (trainable, test eval every {config['eval_every']} steps): {1000 * ours:.1f} ms/step")
    print(f"reference loop (test eval every step):          {1000 * ref:.1f} ms/step")
    print(f"ratio={ours / ref:.3f}")


if __name__ == "__main__":
    main()
