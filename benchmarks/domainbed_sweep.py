"""Steps per second of DomainBed runs trained as one stacked block vs one at a time vs a loop like DomainBed's train.py.

Usage: ``python benchmarks/domainbed_sweep.py [--data-dir DIR] [--steps N] [--width W] [--device cpu|cuda]``

A block is the runs of one algorithm (IRM), one draw and one trial for every
Colored MNIST test-environment set (3 single + 3 pairs: the runs the sweep
trains in one Tune trial; they share the batch size). The block is timed
(a) through ``train_block`` as one block (its default forward on the device:
a grouped-convolution pass on CUDA, model by model on CPU; both with
``--forward both``), (b) ``train_block`` one run at a time, (c)
:func:`core.domainbed.reference.reference_train` (an ``nn.Module``,
``torch.optim.Adam``, DomainBed's autograd IRM penalty) one run at a time,
all in this process on the same data, training steps only (one checkpoint at
the end). Evaluation (every split every checkpoint) is timed separately.
From the measured per-image costs it projects the wall time of DomainBed's
whole Colored + Rotated MNIST sweep (5 algorithms, 20 draws, 3 trials, every
test-environment set, 5,001 steps, a checkpoint every 100, DomainBed's
ConvNet width unless ``--width``) on this device, with DomainBed's batch-size
distribution int(2^U(3, 9)). Ends with ``speedup=<block / one at a time>``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.data import load_idx_merged, load_source  # noqa: E402
from core.domainbed import hparams as dbh  # noqa: E402
from core.domainbed.data import ENVIRONMENTS, base_images  # noqa: E402
from core.domainbed.reference import reference_train  # noqa: E402
from core.domainbed.train import Run, checkpoint_steps, train_block  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_runs(dataset: str, batch_size: int, method: str = "irm") -> list[Run]:
    """One draw's runs for every test-environment set (single and pairs), DomainBed's seeds, one batch size."""
    algorithm = dbh.ALGORITHMS[method]
    hp = dbh.default_hparams(algorithm)
    return [Run(dataset, method, combo, dbh.run_seed(dataset, algorithm, list(combo), 0, 0), 0, hp["lr"], batch_size,
                hp["irm_lambda"], hp["irm_penalty_anneal_iters"])
            for combo in dbh.test_env_combinations(len(ENVIRONMENTS[dataset]))]


def timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def images_per_step(runs: list[Run]) -> int:
    return sum(r.batch_size * len(r.train_envs()) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST-format directory (default: the embedded digits)")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per run")
    parser.add_argument("--batch-size", type=int, default=64, help="DomainBed's default batch size")
    parser.add_argument("--width", type=float, default=1.0, help="ConvNet channel multiplier (1: DomainBed's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--forward", choices=("default", "both"), default="both", help="time the block's stacked and looped forward")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    source = load_source(None) if args.data_dir is None else load_idx_merged(args.data_dir)
    print(f"data: {source.description}; device {device}; width {args.width:g}; load average {os.getloadavg()[0]:.2f}", flush=True)
    base = base_images(source, "ColoredMNIST").to(device)
    runs = block_runs("ColoredMNIST", args.batch_size)
    steps, images = args.steps, images_per_step(runs)
    common = dict(steps=steps + 1, checkpoint_freq=steps + 1, width=args.width, device=device)

    def block(stacked):
        return lambda: train_block(base, runs, stacked=stacked, **common)

    train_block(base, runs[:1], steps=2, checkpoint_freq=2, width=args.width, device=device)  # warm-up
    results = {}
    forwards = [None, True, False] if args.forward == "both" else [None]
    for stacked in forwards:
        name = {None: "block", True: "block, stacked forward", False: "block, model by model"}[stacked]
        results[name] = timed(block(stacked), device)
    results["one at a time"] = timed(lambda: [train_block(base, [r], **common) for r in runs], device)
    results["DomainBed-like loop"] = timed(lambda: [reference_train(base, r, steps=steps + 1, checkpoint_freq=steps + 1, width=args.width,
                                                                    device=device) for r in runs], device)
    eval_s = timed(lambda: train_block(base, runs, steps=1, checkpoint_freq=1, width=args.width, device=device), device)
    # the runs above include one evaluation at their last step: take it out
    evaluated = len(runs) * len(source.labels)
    print(f"{len(runs)} runs (IRM, batch {args.batch_size}, every test-environment set of ColoredMNIST), {steps} steps each:")
    per_image = {}
    for name, seconds in results.items():
        train_s = max(1e-9, seconds - eval_s)
        per_image[name] = train_s / (steps * images)
        print(f"  {name:26s} {len(runs) * steps / train_s:8.2f} run-steps/s   ({1e3 * per_image[name]:.3f} ms per training image)")
    eval_per_image = eval_s / evaluated
    print(f"  evaluation: {1e3 * eval_per_image:.3f} ms per image and run (every split of every environment)")
    best = min(per_image["block"], per_image.get("one at a time", math.inf))
    print(projection(best, eval_per_image, args.width))
    print(f"speedup={per_image['one at a time'] / per_image['block']:.3f}")


def projection(train_per_image: float, eval_per_image: float, width: float) -> str:
    """DomainBed's Colored + Rotated MNIST sweep on this device at the measured per-image costs."""
    mean_batch = float(np.mean([int(2 ** u) for u in np.random.RandomState(0).uniform(3, 9, 100_000)]))
    lines, total = [], 0.0
    for dataset, n_images in (("ColoredMNIST", 70_000), ("RotatedMNIST", 70_000)):
        n = len(ENVIRONMENTS[dataset])
        combos = dbh.test_env_combinations(n)
        checkpoints = len(checkpoint_steps(dbh.STEPS, dbh.CHECKPOINT_FREQ))
        runs = 5 * dbh.N_HPARAMS * dbh.N_TRIALS * len(combos)
        train_images = sum(mean_batch * (n - len(c)) for c in combos) / len(combos) * dbh.STEPS
        seconds = runs * (train_images * train_per_image + checkpoints * n_images * eval_per_image)
        total += seconds
        lines.append(f"{dataset}: {runs:,} runs, {seconds / 3600:,.0f} h")
    return (f"projected DomainBed sweep (5 algorithms x 20 draws x 3 trials x every test-environment set, 5,001 steps, "
            f"70,000 images, width {width:g}, mean batch {mean_batch:.0f}) on this device: " + "; ".join(lines)
            + f"; total {total / 3600:,.0f} h ({total / 86400:,.1f} days)")


if __name__ == "__main__":
    main()
