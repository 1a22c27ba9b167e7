"""Configurations per hour of the §5.4.1 searches on this device: one configuration at a time (K = 1) vs a block.

Paper data size: standard Colored MNIST domains (2 x 25,000 training images,
10,000 test) from a synthetic MNIST-sized source (timing does not depend on
pixel values; ``--data-dir`` for real MNIST); IRM's published hyperparameters
(hidden 390) with seeds 0..K-1, or ``--widths random`` for hidden sizes drawn
from IRM's random-search space (the searches' own mix, padded within a block).
Each run trains ``--steps`` full-batch steps through ``core.cmnist.train.train_block``
(the trainable's code path: domains on the device, evaluation at the first
and the last step) on CUDA when present, CPU otherwise.

It reports, for K = 1 (each configuration alone, one after another) and for the block: seconds per step, configurations per
hour at 501 steps each, and the achieved fraction of the device's matmul peak,
the peak measured in the same run with one large float32 matmul (TF32 when
TF32 is on) and the step's work counted as the products of the channel-form
step (forward and backward, hidden widths as computed: padded to a multiple
of 8 and, in a padded block, to the block's widest). Then the projected wall
time of the whole §5.4.1 search (340 configurations x 6 values of p x 3
variants x 4 methods, 501 steps each) at the block's rate.

    python benchmarks/gpu_search.py [--steps 3] [--block 8] [--widths irm|random] [--batched auto|on|off]

Ends with ``speedup=<block / K=1>`` (configurations per hour).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from core.cmnist import hparams
from core.cmnist import batched
from core.cmnist import models
from core.cmnist.domains import build_cmnist
from core.data import ImageSource, load_idx_dir
from core.cmnist.train import ModelConfig, train_block, use_batched
from core.device import resolve_device
from tasks.cmnist import _on_device, memory_budget_bytes

SEARCH_CONFIGS = 340 * 6 * 3 * 4  # §5.4.1: configurations x p values x variants x methods
SEARCH_STEPS = hparams.STEPS  # 501
PIXELS = models.IMAGE_PIXELS


def mnist_sized_source() -> ImageSource:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60000, 28, 28), dtype=np.uint8)
    return ImageSource("synthetic-mnist", images, rng.integers(0, 10, size=60000))


def step_flop(n: int, width: int, first_layer_rows: int = PIXELS) -> float:
    """Products of one full-batch training step of one model of (computed) ``width`` on n examples.

    Forward: n x rows x H (first layer, channel form: the active channel's 196 rows), n x H x H, n x H;
    backward: the weight gradients of all three layers and the input gradients of layers 2 and 3
    (the first layer's input needs none). 2 FLOP per multiply-add.
    """
    forward = first_layer_rows * width + width * width + width
    backward = first_layer_rows * width + 2 * width * width + 2 * width
    return 2.0 * n * (forward + backward)


def matmul_peak(device: torch.device, size: int, reps: int = 5) -> float:
    """FLOP/s of the best of ``reps`` float32 (size x size) @ (size x size) products on ``device``."""
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_widths(k: int, seed: int = 0) -> list[int]:
    """Hidden sizes of IRM's random-search space, int(2^U(6, 9))."""
    rng = np.random.default_rng(seed)
    return [int(2 ** rng.uniform(6.0, 9.0)) for _ in range(k)]


def mean_random_step_flop(n: int, draws: int = 100_000) -> float:
    """The mean step products of one configuration of the random-search space (each at its own padded width)."""
    return float(np.mean([step_flop(n, models.padded_width(w)) for w in random_widths(draws, seed=1)]))


def time_block(domains, method: str, configs: list[ModelConfig], steps: int, device: torch.device, batched_: bool | None,
               grouping: str, memory: float | None) -> float:
    """Seconds per step of ``configs`` trained as one block (after a one-step warm-up)."""
    run = lambda s: train_block(domains, method, configs, steps=s, eval_every=100, device=device, reduction="mean",
                                batched=batched_, grouping=grouping, memory_bytes=memory)
    run(1)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return (time.perf_counter() - start) / steps


def default_block(device: torch.device, n: int, memory: float, width: int, cpu_block: int = 8, most: int = 64) -> int:
    """8 on CPU; on CUDA the most models of ``width`` whose activations fit ``memory`` in one sub-block (at most 64)."""
    if device.type != "cuda":
        return cpu_block
    fit = int(memory // batched.activation_bytes(1, n, models.padded_width(width)))
    return max(1, min(most, fit))


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min"


def measure(device: torch.device, source: ImageSource, steps: int = 3, block: int = 0, widths: str = "irm",
            block_batched: bool | None = None, grouping: str = "pad", method: str = "irm", tf32_setting: bool | None = None,
            peak_size: int | None = None, say=print) -> dict:
    """K = 1 vs a block on ``device``: the figures ``main`` prints, as a dict (also used by benchmarks/gpu_check.py)."""
    tf32 = batched.tf32_enabled(device, tf32_setting)
    domains = build_cmnist(source, 0)
    if device.type != "cpu":
        domains = _on_device(domains, device)
    n = sum(len(d.y) for d in domains.train)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} torch threads)"
    say(f"device {name}; tf32 {tf32}; source {source.name}: train domains {[len(d.y) for d in domains.train]}, "
        f"test {len(domains.test[0].y)}; method {method}; {steps} timed steps per run")

    with batched.tf32_mode(tf32):
        peak = matmul_peak(device, peak_size or (8192 if device.type == "cuda" else 2048))
    say(f"matmul peak (float32{' TF32' if tf32 else ''}, one large product): {peak / 1e12:.3f} TFLOP/s")

    irm = dict(hparams.IRM)
    memory = memory_budget_bytes({}, device)
    k = block or default_block(device, n, memory, irm["hidden"] if widths == "irm" else 512)
    hidden = [irm["hidden"]] * k if widths == "irm" else random_widths(k)
    configs = [ModelConfig(**{**irm, "hidden": w, "seed": i}) for i, w in enumerate(hidden)]
    say(f"activation memory budget {memory / 2**30:.1f} GiB (tasks.cmnist.memory_budget_bytes)")

    results = {}
    # K = 1: each configuration alone, one after another (at IRM's widths they are all alike: the first one stands for all).
    singles = configs[:1] if widths == "irm" else configs
    for label, part, path in (("K=1", singles, False), (f"K={len(configs)}", configs, block_batched)):
        part_widths = [c.hidden for c in part]
        stacked = use_batched(len(part), device, path) and label != "K=1"
        plan = [[i] for i in range(len(part))] if label == "K=1" else batched.plan_block(part_widths, n, grouping if stacked else "pad", memory)
        useful = sum(step_flop(n, models.padded_width(w)) for w in part_widths)
        computed = sum(step_flop(n, max(models.padded_width(part_widths[i]) for i in sub) if stacked else models.padded_width(part_widths[i]))
                       for sub in plan for i in sub)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with batched.tf32_mode(tf32):
            if label == "K=1":
                seconds = sum(time_block(domains, method, [c], steps, device, False, grouping, memory) for c in part)
            else:
                seconds = time_block(domains, method, part, steps, device, path, grouping, memory)
        per_hour = len(part) * 3600.0 / (seconds * SEARCH_STEPS)
        results[label] = {"ms_per_step": seconds * 1000, "configs_per_hour": per_hour, "tflops": useful / seconds / 1e12,
                          "fraction_of_peak": useful / seconds / peak, "path": "batched" if stacked else "loop", "runs": len(plan)}
        extra = ""
        if device.type == "cuda":
            estimate = max(batched.activation_bytes(len(sub), n, max(models.padded_width(part_widths[i]) for i in sub)) for sub in plan)
            results[label]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            extra = f", peak memory {results[label]['peak_memory_gib']:.2f} GiB (activation estimate {estimate / 2**30:.2f} GiB)"
        say(f"{label} ({'batched' if stacked else 'loop'}, {len(plan)} {'run(s)' if label == 'K=1' else 'sub-block(s)'}): "
            f"{seconds * 1000:.1f} ms/step, "
            f"{per_hour:.1f} configurations/hour at {SEARCH_STEPS} steps, {useful / seconds / 1e12:.3f} TFLOP/s "
            f"= {100 * useful / seconds / peak:.1f}% of the matmul peak{extra}")
        if computed > useful:
            say(f"  (computed products {computed / useful:.2f}x the models' own: padding to the block's widest)")

    one, many = results["K=1"], results[f"K={len(configs)}"]
    say(f"step products: {step_flop(n, models.padded_width(irm['hidden'])) / 1e9:.1f} GFLOP per configuration at hidden "
        f"{irm['hidden']} (computed {models.padded_width(irm['hidden'])}); the random-search space's mean "
        f"{mean_random_step_flop(n) / 1e9:.1f} GFLOP")
    search_s_k1 = SEARCH_CONFIGS / one["configs_per_hour"] * 3600
    search_s = SEARCH_CONFIGS / many["configs_per_hour"] * 3600
    search_flop = SEARCH_CONFIGS * SEARCH_STEPS * mean_random_step_flop(n)
    say(f"§5.4.1 search ({SEARCH_CONFIGS} trainings x {SEARCH_STEPS} steps), projected on this device: "
        f"{_duration(search_s)} in blocks of {len(configs)} at these widths "
        f"({_duration(search_s_k1)} at K=1); "
        f"{search_flop:.2e} FLOP at the random space's mean width -> {_duration(search_flop / (many['tflops'] * 1e12))} at the block's FLOP rate")
    speedup = many["configs_per_hour"] / one["configs_per_hour"]
    say(f"speedup={speedup:.2f}")
    return {"device": name, "tf32": tf32, "matmul_peak_tflops": peak / 1e12, "block": len(configs), "widths": widths,
            "k1": one, "block_run": many, "speedup": speedup, "search_hours_block": search_s / 3600, "search_hours_k1": search_s_k1 / 3600,
            "search_hours_at_block_flop_rate": search_flop / (many["tflops"] * 1e12) / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--block", type=int, default=0,
                        help="configurations in the block, K (default: 8 on CPU; on CUDA the most one sub-block holds "
                             "under the memory budget, at most 64)")
    parser.add_argument("--widths", choices=("irm", "random"), default="irm", help="IRM's hidden 390, or the random-search space's")
    parser.add_argument("--batched", choices=("auto", "on", "off"), default="auto",
                        help="the block as batched kernels (auto: on CUDA) or a loop over models")
    parser.add_argument("--grouping", choices=("pad", "width", "bucket"), default="pad")
    parser.add_argument("--method", default="irm")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--tf32", choices=("auto", "on", "off"), default="auto", help="TF32 products on CUDA (auto: on)")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul size of the peak measurement (default 8192 CUDA, 2048 CPU)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    setting = {"auto": None, "on": True, "off": False}
    device = resolve_device(args.device)
    source = load_idx_dir(args.data_dir) if args.data_dir else mnist_sized_source()
    measure(device, source, args.steps, args.block, args.widths, setting[args.batched], args.grouping, args.method,
            setting[args.tf32], args.peak_size)


if __name__ == "__main__":
    main()
