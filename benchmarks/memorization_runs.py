"""Runs per hour of the easy-examples study (thesis Fig 3.1) at the smoke size: one seed per trial vs the default block.

One "run" is one seed's one-epoch MLP (memorization-easy smoke: 1,000 digits,
2 x 128 units, batch 16, lr 0.05; real, randX and randY, ``--runs`` seeds
each). Two measurements, same process:

1. core only (no Ray): ``train_seeds`` called once per seed vs once for all
   seeds as one stacked block (real data only);
2. the real path, as ``gensweep run`` does it (Ray Tune trials, MLflow child
   runs, Parquet rows): the smoke sweep with ``block_size=1`` (one Tune trial
   per seed) vs ``block_size=runs`` (the default: one trial per dataset), each in a
   fresh results directory, on one local Ray runtime started beforehand
   (Ray start-up is not timed; trial scheduling, worker reuse, result
   reporting, MLflow and Parquet writes are).

The last line is ``speedup=<block / one per trial>`` of the real path (2).

    .venv/bin/python benchmarks/memorization_runs.py [--runs 100] [--cpus 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="seeds (one-epoch runs) per measurement (smoke: 100)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray runtime")
    args = parser.parse_args()

    import torch

    from pipelines.memorization import easy
    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.runtime import init_ray
    from pipelines.engine.spec import resolve_settings
    from core.memorization.seeds import train_seeds

    base = [f"runs={args.runs}"]
    settings = resolve_settings(easy.PIPELINE, "smoke", base)
    total = args.runs * len(settings["noises"])
    data = easy.PIPELINE.load_data(settings, None)
    kw = dict(width=settings["width"], epochs=1, batch_size=settings["batch_size"], lr=settings["lr"])
    seeds = list(range(args.runs))
    print(f"smoke size: {len(data.train)} examples, width {settings['width']}, batch {settings['batch_size']}, "
          f"{args.runs} runs x {len(settings['noises'])} datasets")

    torch.set_num_threads(1)  # as inside a Ray trial with cpus_per_trial=1
    start = time.perf_counter()
    for s in seeds:
        train_seeds(data.train, data.val, seeds=[s], **kw)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    train_seeds(data.train, data.val, seeds=seeds, **kw)
    block = time.perf_counter() - start
    print(f"core, one seed per call : {3600 * args.runs / alone:10.0f} runs/hour ({alone:.2f} s)")
    print(f"core, one block         : {3600 * args.runs / block:10.0f} runs/hour ({block:.2f} s)")
    print(f"core speedup={alone / block:.2f}")

    init_ray(num_cpus=args.cpus)
    rates = {}
    for name, size in (("one seed per trial", 1), ("default block", args.runs)):
        settings = resolve_settings(easy.PIPELINE, "smoke", base + [f"block_size={size}"])
        with tempfile.TemporaryDirectory() as results:
            start = time.perf_counter()
            summary = run_sweep(Sweep(easy.PIPELINE, "smoke", settings, results, quiet=True, num_cpus=args.cpus))
            elapsed = time.perf_counter() - start
        assert summary["complete"] and summary["ran"] == total, summary
        rates[name] = 3600 * total / elapsed
        trials = len(settings["noises"]) * -(-args.runs // size)
        print(f"ray, {name:<19}: {rates[name]:10.0f} runs/hour ({elapsed:.1f} s for {total} runs, {trials} trials)")
    print(f"speedup={rates['default block'] / rates['one seed per trial']:.2f}")


if __name__ == "__main__":
    main()
