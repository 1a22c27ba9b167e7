"""Many small runs of the memorization study, stacked vs one at a time, at the smoke size (thesis Fig 3.1, 3.3, 3.5).

Two measurements, in one process, each repeated ``--repeats`` times with its
two sides interleaved (one seed at a time, then the block, then again), so
that a change of the machine's load hits both sides alike; every ratio is
the median over the repeats of the ratio within a repeat.

1. core only (no Ray), one thread, per many-seed part:
   - easy (memorization-easy smoke: 1,000 digits, 2 x 128 units, batch 16,
     one epoch; ``--runs`` seeds): ``train_seeds`` once per seed vs once for
     all seeds as one stacked block;
   - capacity (the smoke trial of noise 0.5: widths 16, 64, 256 x 3 seeds on
     500 digits, ``--capacity-epochs`` epochs): each (width, seed) alone vs
     one block per width, as the trainable runs them;
   - sensitivity (the smoke trial of real inputs and labels: 2 x 16 units,
     80 unrolled steps, 2 seeds, per-class matrix): each seed alone, as the
     trainable did before (one unroll for g, one for the class terms) vs the
     seeds as one stacked unroll with batched class terms;
2. the real path, as ``gensweep run`` does it (Ray Tune trials, MLflow child
   runs, Parquet rows): the memorization-easy smoke sweep (``--runs`` seeds
   x real, randX, randY) with ``block_size=1`` (one Tune trial per seed) vs
   the smoke preset's block, each in a fresh results directory on one local
   Ray runtime started beforehand. Not timed: Ray's start and MLflow creating
   its tables in a new database (done once, copied into each directory);
   timed: trial scheduling, worker start and reuse, training, reporting,
   MLflow and Parquet writes. Each sweep is timed twice: whole, and from the
   moment its first trial starts training to its end (the trainable is
   wrapped to note that moment). The difference is the sweep's own start,
   the same whatever the block: loading the data, opening the stores and
   starting the trial workers, each importing torch and Ray Tune (5-20 s
   on 2 cores, by the load); what follows is the work blocks can save.
   The repeats alternate which side runs first.

The last line is ``speedup=<one per trial / block>`` of the working time
(from the first trial's start) of the real path (2); the whole sweeps'
ratio is printed before it.

    .venv/bin/python benchmarks/memorization_runs.py [--runs 100] [--cpus 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(name: str, alone, block, repeats: int, unit: str, count: int) -> float:
    """Time ``alone`` and ``block`` back to back ``repeats`` times; print each pair; return the median ratio."""
    ratios = []
    for r in range(repeats):
        a, b = timed(alone), timed(block)
        ratios.append(a / b)
        print(f"{name:<12} repeat {r + 1}: one at a time {a:7.2f} s, block {b:7.2f} s "
              f"({3600 * count / a:9.0f} vs {3600 * count / b:9.0f} {unit}/hour), ratio {a / b:.2f}", flush=True)
    median = statistics.median(ratios)
    print(f"{name} core speedup={median:.2f}", flush=True)
    return median


def core_parts(args) -> None:
    import torch

    from core.memorization.models import mlp
    from core.memorization.seeds import init_block, train_seeds
    from core.memorization.sensitivity import per_class_matrix, sgd_batches, unrolled_sensitivity, unrolled_sensitivity_block
    from core.memorization.train import stream_seed
    from pipelines.engine.spec import resolve_settings
    from pipelines.memorization import capacity, easy, sensitivity
    from tasks.memorization import training_set

    torch.set_num_threads(1)  # as inside a Ray trial with cpus_per_trial=1

    settings = resolve_settings(easy.PIPELINE, "smoke", [f"runs={args.runs}"])
    data = easy.PIPELINE.load_data(settings, None)
    kw = dict(width=settings["width"], epochs=1, batch_size=settings["batch_size"], lr=settings["lr"])
    seeds = list(range(args.runs))
    print(f"easy: {len(data.train)} examples, width {settings['width']}, batch {settings['batch_size']}, {args.runs} seeds")
    interleaved("easy", lambda: [train_seeds(data.train, data.val, seeds=[s], **kw) for s in seeds],
                lambda: train_seeds(data.train, data.val, seeds=seeds, **kw), args.repeats, "runs", args.runs)

    settings = resolve_settings(capacity.PIPELINE, "smoke", [f"epochs={args.capacity_epochs}"])
    cap = capacity.PIPELINE.load_data(settings, None)
    noisy = training_set(cap, settings["noise"], 0.5, settings["data_seed"])
    kw = dict(epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"])
    widths, cap_seeds = settings["widths"], list(range(settings["seeds"]))
    print(f"capacity: {len(noisy)} examples ({settings['noise']} 0.5), widths {widths} x {len(cap_seeds)} seeds, {kw['epochs']} epochs")
    interleaved("capacity", lambda: [train_seeds(noisy, cap.val, width=w, seeds=[s], **kw) for w in widths for s in cap_seeds],
                lambda: [train_seeds(noisy, cap.val, width=w, seeds=cap_seeds, **kw) for w in widths], args.repeats, "runs",
                len(widths) * len(cap_seeds))

    settings = resolve_settings(sensitivity.PIPELINE, "smoke", [])
    sens = sensitivity.PIPELINE.load_data(settings, None)
    x, y = sens.train.x.flatten(1), sens.train.y
    steps, batch, lr, width = settings["steps"], settings["batch_size"], settings["lr"], settings["width"]
    measured = list(range(20, steps + 1, settings["measure_every"]))
    sens_seeds = list(range(settings["seeds"]))
    orders = [sgd_batches(len(x), batch, -(-steps * batch // len(x)), stream_seed(s, "order"))[:steps] for s in sens_seeds]

    def sensitivity_alone():
        for seed, order in zip(sens_seeds, orders):
            unrolled_sensitivity(mlp(x.shape[1], width, 10, seed=seed), x, y, order, lr, steps=measured)
            by_class = unrolled_sensitivity(mlp(x.shape[1], width, 10, seed=seed), x, y, order, lr, steps=measured, classes=10)
            per_class_matrix(by_class, y, 10)

    def sensitivity_block():
        _, by_class = unrolled_sensitivity_block(init_block(x.shape[1], width, 10, 2, sens_seeds), x, y,
                                                 [torch.stack(step) for step in zip(*orders)], lr, steps=measured, classes=10)
        [per_class_matrix(by_class[k], y, 10) for k in range(len(sens_seeds))]

    print(f"sensitivity: {len(x)} examples (14x14), 2 x {width} units, {steps} steps, {len(measured)} measured, "
          f"{len(sens_seeds)} seeds, per-class matrix")
    interleaved("sensitivity", sensitivity_alone, sensitivity_block, args.repeats, "seeds", len(sens_seeds))


def mlflow_template(directory: str) -> str:
    """An MLflow SQLite database with its tables created (what a results directory's first sweep makes)."""
    from pipelines.engine.tracking import MlflowSweep, default_tracking_uri

    os.makedirs(directory, exist_ok=True)
    MlflowSweep(default_tracking_uri(directory), "benchmark", "template", {}).finish("FINISHED")
    return os.path.join(directory, "mlflow.db")


def stamped(trainable, path: str):
    """``trainable`` that first appends the time it starts training to ``path`` (in the trial's worker)."""

    def run(config, data):
        with open(path, "a") as f:
            f.write(f"{time.time()}\n")
        trainable(config, data)

    return run


def ray_path(args) -> tuple[float, float]:
    """(speedup of the working time, of the whole sweep) of the block over one seed per trial, at the smoke size."""
    import dataclasses

    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.runtime import init_ray
    from pipelines.engine.spec import resolve_settings
    from pipelines.memorization import easy

    base = [f"runs={args.runs}"]
    block = resolve_settings(easy.PIPELINE, "smoke", base)["block_size"]
    init_ray(num_cpus=args.cpus)
    with tempfile.TemporaryDirectory() as scratch:
        template = mlflow_template(os.path.join(scratch, "template"))

        def sweep(size: int) -> tuple[float, float]:
            settings = resolve_settings(easy.PIPELINE, "smoke", base + [f"block_size={size}"])
            results = tempfile.mkdtemp(dir=scratch)
            shutil.copy(template, os.path.join(results, "mlflow.db"))
            starts = os.path.join(results, "starts.txt")
            pipeline = dataclasses.replace(easy.PIPELINE, stages=lambda s: [dataclasses.replace(stage, trainable=stamped(stage.trainable, starts))
                                                                            for stage in easy.PIPELINE.stages(s)])
            start = time.perf_counter()
            clock = time.time()
            summary = run_sweep(Sweep(pipeline, "smoke", settings, results, quiet=True, num_cpus=args.cpus))
            elapsed, end = time.perf_counter() - start, time.time()
            total = args.runs * len(settings["noises"])
            assert summary.complete and summary.ran == total, summary
            working = end - min(float(line) for line in open(starts))
            print(f"ray, block of {size:>3}: {3600 * total / elapsed:8.0f} runs/hour ({elapsed:6.1f} s for {total} runs in "
                  f"{len(settings['noises']) * -(-args.runs // size)} trials; {working:6.1f} s of them from the first trial's "
                  f"start, {min(float(line) for line in open(starts)) - clock:5.1f} s before it; load {os.getloadavg()[0]:.1f})", flush=True)
            return working, elapsed

        working, whole = [], []
        for r in range(args.repeats):
            if r % 2 == 0:  # alternate which side goes first, so that a drift of the load hits both alike
                alone, stacked = sweep(1), sweep(block)
            else:
                stacked, alone = sweep(block), sweep(1)
            working.append(alone[0] / stacked[0])
            whole.append(alone[1] / stacked[1])
            print(f"ray repeat {r + 1}: ratio {working[-1]:.2f} from the first trial's start, {whole[-1]:.2f} whole sweep", flush=True)
    return statistics.median(working), statistics.median(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="seeds (one-epoch runs) per dataset (smoke: 100)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray runtime")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each measurement (the median ratio counts)")
    parser.add_argument("--capacity-epochs", type=int, default=10, help="epochs of the capacity measurement (smoke: 60)")
    parser.add_argument("--skip-core", action="store_true", help="only the real path (2)")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    if not args.skip_core:
        core_parts(args)
    working, whole = ray_path(args)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"whole-sweep speedup={whole:.2f} (each sweep's start included)")
    print(f"speedup={working:.2f}")


if __name__ == "__main__":
    main()
