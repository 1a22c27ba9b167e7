"""Steps per second of DomainBed runs trained as one stacked block vs one at a time vs a loop like DomainBed's train.py.

Usage: ``python benchmarks/domainbed_sweep.py [--data-dir DIR] [--steps N] [--width W] [--device cpu|cuda]``

A block is the runs of one algorithm (IRM), one draw and one trial for every
Colored MNIST test-environment set (3 single + 3 pairs: the runs the sweep
trains in one Tune trial; they share the batch size). The block is timed
through ``train_block`` as one block, with its forward as one grouped-
convolution pass (the default on CUDA) and model by model (the default on
CPU); ``train_block`` one run at a time; and
:func:`core.domainbed.reference.reference_train` (an ``nn.Module``,
``torch.optim.Adam``, DomainBed's autograd IRM penalty) one run at a time;
all in this process on the same data, in ``--repeats`` rounds (each case's
best round counts). Evaluations (every split at step 0 and the last) are
timed apart, so steps/s are training steps.
From the measured per-image costs it projects the wall time of DomainBed's
whole Colored + Rotated MNIST sweep (5 algorithms, 20 draws, 3 trials, every
test-environment set, 5,001 steps, a checkpoint every 100, DomainBed's
ConvNet width unless ``--width``) on this device, with DomainBed's batch-size
distribution int(2^U(3, 9)). Ends with ``speedup=<block (its device's default forward) / one at a time>``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np
import torch

from core.data import ImageSource, load_digits_source, load_idx_merged
from core.domainbed import hparams as dbh
from core.domainbed.data import ENVIRONMENTS, base_images
from core.domainbed import reference as reference_module
from core.domainbed import train as train_module
from core.domainbed.reference import reference_train
from core.domainbed.train import Run, checkpoint_steps, train_block
from core.device import resolve_device


QUICK_IMAGES = 240  # --quick: the images the block trains and evaluates on


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


class EvalClock:
    """Times the evaluations inside the trainers (``_Group.evaluate``, ``reference.accuracies``) so training time is the rest."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.undo = device, 0.0, []

    def wrap(self, owner, name: str) -> None:
        original = getattr(owner, name)

        def timed_call(*args, **kwargs):
            _sync(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            _sync(self.device)
            self.seconds += time.perf_counter() - start
            return out

        setattr(owner, name, timed_call)
        self.undo.append(lambda: setattr(owner, name, original))


def timed(fn, device: torch.device, clock: EvalClock) -> tuple[float, float]:
    """(training seconds, evaluation seconds) of ``fn()``."""
    _sync(device)
    clock.seconds = 0.0
    start = time.perf_counter()
    fn()
    _sync(device)
    total = time.perf_counter() - start
    return total - clock.seconds, clock.seconds


def images_per_step(runs: list[Run]) -> int:
    return sum(r.batch_size * len(r.train_envs()) for r in runs)


def measure(device: torch.device, *, quick: bool = False, data_dir: str | None = None, steps: int = 20, batch_size: int = 64,
            width: float = 1.0, repeats: int = 2, say=print) -> dict:
    """Time the four cases (block stacked / model by model, one at a time, DomainBed-like loop); their figures.

    ``quick``: 3 steps, one round, width 0.25, batch 8, the first 240 images (a CPU check that the code path runs,
    not a measurement).
    Returns ``{"cases": {name: {"run_steps_per_s", "ms_per_image", "eval_ms_per_image"}}, "default", "speedup",
    "vs_loop", "projection", "projected_hours"}``.
    """
    if quick:
        steps, repeats, width, batch_size = 3, 1, 0.25, 8
    source = load_digits_source() if data_dir is None else load_idx_merged(data_dir)
    if quick:  # 240 images: every environment a few dozen, each evaluation a moment even on a loaded CPU
        source = ImageSource(source.name, source.images[:QUICK_IMAGES], source.labels[:QUICK_IMAGES], source.description)
    say(f"data: {source.description}; device {device}; width {width:g}; threads {torch.get_num_threads()}; "
        f"load average {os.getloadavg()[0]:.2f}")
    base = base_images(source, "ColoredMNIST").to(device)
    runs = block_runs("ColoredMNIST", batch_size)
    images = images_per_step(runs)
    clock = EvalClock(device)
    clock.wrap(train_module._Group, "evaluate")
    clock.wrap(reference_module, "accuracies")
    common = dict(steps=steps, checkpoint_freq=steps, width=width, device=device)  # checkpoints: step 0 and the last
    try:
        train_block(base, runs[:2], steps=2, checkpoint_freq=2, width=width, device=device)  # warm-up
        cases = {
            "block (stacked forward)": lambda: train_block(base, runs, stacked=True, **common),
            "block (model by model)": lambda: train_block(base, runs, stacked=False, **common),
            "one at a time": lambda: [train_block(base, [r], **common) for r in runs],
            "DomainBed-like loop": lambda: [reference_train(base, r, **common) for r in runs],
        }
        default = "block (stacked forward)" if device.type == "cuda" else "block (model by model)"
        say(f"{len(runs)} runs (IRM, batch {batch_size}, every test-environment set of ColoredMNIST), {steps} steps each; "
            f"the block's default forward on {device.type}: {default.split('(')[1][:-1]}")
        best: dict[str, tuple[float, float]] = {}
        for round_ in range(repeats):  # round robin, the best of each: a loaded machine slows all cases alike
            for name, fn in cases.items():
                train_s, eval_s = timed(fn, device, clock)
                say(f"  round {round_ + 1}/{repeats}: {name}: {train_s:.1f} s training, {eval_s:.1f} s evaluation")
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], train_s), min(old[1], eval_s))
    finally:
        for undo in clock.undo:
            undo()
    figures: dict[str, dict] = {}
    per_image, eval_per_image = {}, []
    for name, (train_s, eval_s) in best.items():
        per_image[name] = train_s / (steps * images)
        eval_per_image.append(eval_s / (2 * len(runs) * len(source.labels)))  # two checkpoints per run
        figures[name] = {"run_steps_per_s": len(runs) * steps / train_s, "ms_per_image": 1e3 * per_image[name],
                         "eval_ms_per_image": 1e3 * eval_per_image[-1]}
        say(f"  {name:26s} {figures[name]['run_steps_per_s']:8.2f} run-steps/s   ({figures[name]['ms_per_image']:.3f} ms per "
            f"training image; evaluation {figures[name]['eval_ms_per_image']:.3f} ms per image)")
    projected = projection(per_image[default], min(eval_per_image[:3]), width)
    hours = {d: seconds / 3600 for d, (_, seconds) in projection_seconds(per_image[default], min(eval_per_image[:3])).items()}
    vs_loop = per_image["DomainBed-like loop"] / per_image[default]
    speedup = per_image["one at a time"] / per_image[default]
    say(projected)
    say(f"vs DomainBed-like loop: {vs_loop:.3f}x")
    return {"cases": figures, "default": default, "steps": steps, "width": width, "speedup": speedup, "vs_loop": vs_loop,
            "projection": projected, "projected_hours": hours, "train_s_per_image": per_image[default],
            "eval_s_per_image": min(eval_per_image[:3])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST-format directory (default: the embedded digits)")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per run")
    parser.add_argument("--batch-size", type=int, default=64, help="DomainBed's default batch size")
    parser.add_argument("--width", type=float, default=1.0, help="ConvNet channel multiplier (1: DomainBed's)")
    parser.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the cases; each case's best round counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(resolve_device(args.device), data_dir=args.data_dir, steps=args.steps, batch_size=args.batch_size,
                     width=args.width, repeats=args.repeats, say=lambda text: print(text, flush=True))
    print(f"speedup={result['speedup']:.3f}")


def mean_batch_size() -> float:
    """The mean of DomainBed's batch-size draw int(2^U(3, 9)) (100,000 draws, seed 0)."""
    return float(np.mean([int(2 ** u) for u in np.random.RandomState(0).uniform(3, 9, 100_000)]))


def projection_seconds(train_per_image: float, eval_per_image: float) -> dict[str, tuple[int, float]]:
    """Dataset -> (runs, seconds) of DomainBed's sweep at these per-image costs (checked by hand in tests/test_gpu_check.py).

    Runs: 5 algorithms x ``N_HPARAMS`` draws x ``N_TRIALS`` trials x every test-environment set (singles and pairs).
    A run trains ``STEPS`` steps of the mean batch from each of its training environments (the environments less its
    test set) and evaluates all 70,000 images at each checkpoint (step 0, every ``CHECKPOINT_FREQ``, the last).
    """
    mean_batch = mean_batch_size()
    out = {}
    for dataset, n_images in (("ColoredMNIST", 70_000), ("RotatedMNIST", 70_000)):
        n = len(ENVIRONMENTS[dataset])
        combos = dbh.test_env_combinations(n)
        checkpoints = len(checkpoint_steps(dbh.STEPS, dbh.CHECKPOINT_FREQ))
        runs = 5 * dbh.N_HPARAMS * dbh.N_TRIALS * len(combos)
        train_images = sum(mean_batch * (n - len(c)) for c in combos) / len(combos) * dbh.STEPS
        out[dataset] = (runs, runs * (train_images * train_per_image + checkpoints * n_images * eval_per_image))
    return out


def projection(train_per_image: float, eval_per_image: float, width: float) -> str:
    """DomainBed's Colored + Rotated MNIST sweep on this device at the measured per-image costs."""
    parts = projection_seconds(train_per_image, eval_per_image)
    total = sum(seconds for _, seconds in parts.values())
    lines = [f"{dataset}: {runs:,} runs, {seconds / 3600:,.0f} h" for dataset, (runs, seconds) in parts.items()]
    return (f"projected DomainBed sweep (5 algorithms x 20 draws x 3 trials x every test-environment set, 5,001 steps, "
            f"70,000 images, width {width:g}, mean batch {mean_batch_size():.0f}) on this device: " + "; ".join(lines)
            + f"; total {total / 3600:,.0f} h ({total / 86400:,.1f} days)")


if __name__ == "__main__":
    main()
