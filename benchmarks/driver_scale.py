"""Driver cost per finished configuration at scale: instant trainables on a two-node Ray cluster on loopback.

A pipeline whose trainable reports its configurations' metrics at once runs
an Optuna search (random sampler, paired draws) of N configurations in Tune
trials of ``--block`` configurations through the real runner: Ray Tune,
Optuna on SQLite, MLflow on SQLite, Parquet. With no training, the wall time
is the driver's cost: Tune's trial handling, the Optuna records, the MLflow
child runs and the Parquet rows. For each N it prints configurations per
second, ms per configuration, the driver's resident memory before and after
the sweep, and the Parquet file count before and after ``compact``. A
warm-up sweep first starts Ray's workers (not counted). Each sweep starts
from an empty results directory (new SQLite databases): its wall time includes
the sweep's own set-up, a fixed cost measured as a sweep of one configuration
per concurrent trial (new stores, Tune's start, the trial actors). For each N
the figures are: ms per configuration with the set-up, beyond it, and the
part spent in gensweep's own per-trial code (the searcher's suggest and the
sink's callbacks, timed by :class:`DriverClock`); then how far each of the
three varies over the sizes. Then the same with one configuration per trial,
and the same trials under a bare Tuner (Ray Tune's own share of that cost).

    python benchmarks/driver_scale.py [--sizes 1000,5000,20000] [--block 500]

Ends with ``driver_ms_per_config=<ms per configuration at the largest N>``
(the whole sweep's wall time over N, set-up included).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.engine.runner import Sweep, run_sweep
from pipelines.engine.spec import NoData, Pipeline, Search, Setting, Stage, resolve_settings
from pipelines.engine.store import ResultStore
from tasks.report import Report, configurations, tune_reporter


CPUS_PER_TRIAL = 0.5


def instant_trainable(config: dict, data=None) -> None:
    """Reports every configuration of its block at once: loss = (x - 0.3)^2."""
    report = tune_reporter()
    report(Report(step=0, final=True, metrics=[{"step": 0, "loss": (float(c["x"]) - 0.3) ** 2} for c in configurations(config)]))


def _space(trial) -> dict:
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    return {}


def _stages(settings: dict) -> list[Stage]:
    search = Search(studies=[{"arm": "a"}], space=_space, budget=settings["configs"], study_name=lambda s: s["arm"],
                    block_size=settings["block"], paired_by=("arm",))
    return [Stage("search", instant_trainable, search, metric="loss", mode="min", label=lambda c: f"x={c['x']:.3f}")]


PIPELINE = Pipeline(
    name="instant", description="instant trainables", presets={"smoke": {}},
    settings={"configs": Setting(1000, "configurations", ge=1), "block": Setting(500, "block size", ge=1)},
    load_data=lambda settings, data_dir: NoData("none"), stages=_stages, report=lambda t, c, o: "",
    run_defaults={"gpus_per_trial": 0.0},
)


class DriverClock:
    """Seconds the driver spends in gensweep's own per-trial code: the searcher's suggest and the sink's callbacks.

    Installed around the study searcher and result sink classes the runner makes; nested
    calls (a callback calling ``flush``) count once. The rest of a sweep's wall
    time is its set-up and Ray Tune's own trial handling.
    """

    def __init__(self):
        self.seconds, self._depth = 0.0, 0

    def wrap(self, obj, *names: str):
        for name in names:
            method = getattr(obj, name)

            def timed(*args, _method=method, **kwargs):
                self._depth += 1
                start = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    self._depth -= 1
                    if not self._depth:
                        self.seconds += time.perf_counter() - start

            setattr(obj, name, timed)
        return obj

    def install(self):
        """Time the searchers and sinks the runner makes from now on; returns a function that undoes it."""
        import pipelines.engine.searchers as searchers
        import pipelines.engine.sink as sink

        originals = searchers.StudySearcher, sink.ResultSink
        searchers.StudySearcher = lambda *a, **k: self.wrap(originals[0](*a, **k), "suggest")
        sink.ResultSink = lambda *a, **k: self.wrap(
            originals[1](*a, **k), "on_trial_result", "on_trial_complete", "on_step_begin", "on_trial_error", "flush"
        )

        def restore() -> None:
            searchers.StudySearcher, sink.ResultSink = originals

        return restore


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def count_files(results: str) -> int:
    """Parquet files of the trials table (the curves table has as many)."""
    return sum(len([f for f in files if f.endswith(".parquet")]) for _, _, files in os.walk(os.path.join(results, "parquet", "trials")))


@dataclass
class Figures:
    configs: int
    seconds: float
    rss_before: float
    rss_after: float
    files: int  # trials files the sweep wrote (before its compaction at the end, if any)
    files_compacted: int  # after compaction (the sweep's own, or ``compact`` here)
    own_seconds: float = 0.0  # of which in gensweep's searcher and sink (DriverClock)
    rss_quarters: tuple = ()  # RSS at 25 / 50 / 75 / 100% of the sweep's wall time
    results: str = ""  # the sweep's results directory
    compacted_by_sweep: int = 0  # trials files the sweep merged itself when it finished


def run_one(n: int, block: int, address: str, workdir: str) -> Figures:
    os.makedirs(workdir, exist_ok=True)
    results = tempfile.mkdtemp(prefix=f"results-{n}-", dir=workdir)  # a new sweep each time, even for a repeated size
    settings = resolve_settings(PIPELINE, "smoke", [f"configs={n}", f"block={block}", f"cpus_per_trial={CPUS_PER_TRIAL}"])
    before = rss_mb()
    samples, stop = [], threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            samples.append(rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    clock = DriverClock()
    restore = clock.install()
    start = time.perf_counter()
    sampler.start()
    try:
        summary = run_sweep(Sweep(PIPELINE, "smoke", settings, results, address=address, quiet=True))
    finally:
        restore()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    quarters = tuple(samples[min(len(samples) - 1, int(q * len(samples)) - 1)] for q in (0.25, 0.5, 0.75, 1.0)) if samples else ()
    assert summary.complete and summary.finished == n, summary
    after = rss_mb()
    files = summary.compacted or count_files(results)
    store = ResultStore.open(results)
    store.compact("instant", summary.sweep)
    assert len(store.read("trials", "instant")) == n
    return Figures(n, seconds, before, after, files, count_files(results), clock.seconds, quarters, results, summary.compacted)


def plain_tune(n: int, workdir: str) -> float:
    """Seconds for ``n`` one-configuration trials of the instant trainable under a bare Tuner (no searcher, no sink)."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    def trainable(config: dict) -> None:
        tune.report({"loss": (float(config["x"]) - 0.3) ** 2})

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": CPUS_PER_TRIAL}),
        param_space={"x": tune.grid_search([i / n for i in range(n)])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=4),
        run_config=tune.RunConfig(storage_path=os.path.join(workdir, "tune-only"), verbose=0, callbacks=[JsonLoggerCallback()]),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--single", type=int, default=200, help="configurations of the one-configuration-per-trial run")
    args = parser.parse_args()

    import ray
    import ray.cloudpickle as cloudpickle
    from ray.cluster_utils import Cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    print(f"two-node Ray cluster on loopback ({len(ray.nodes()) if ray.is_initialized() else 2} nodes, 1 CPU each), "
          f"blocks of {args.block}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    figures = []
    try:
        with tempfile.TemporaryDirectory() as workdir:
            warm = run_one(2 * args.block, args.block, address=cluster.address, workdir=os.path.join(workdir, "warm-up"))
            print(f"warm-up sweep (Ray workers start, imports; not counted): {warm.configs} configs in {warm.seconds:.1f} s", flush=True)
            workers = int(2 / CPUS_PER_TRIAL)  # concurrent trials on the two 1-CPU nodes
            setup = run_one(workers, 1, address=cluster.address, workdir=os.path.join(workdir, "setup"))
            print(f"set-up of a sweep (new SQLite stores, Tune start, its {workers} trial actors: a sweep of "
                  f"{workers} one-configuration trials): {setup.seconds:.1f} s", flush=True)
            for n in (int(s) for s in args.sizes.split(",")):
                f = run_one(n, args.block, cluster.address, workdir)
                figures.append(f)
                marginal = 1000 * (f.seconds - setup.seconds) / (f.configs - setup.configs)
                print(f"{f.configs:>6} configs: {f.seconds:7.1f} s, {f.configs / f.seconds:7.1f} configs/s, "
                      f"{1000 * f.seconds / f.configs:6.2f} ms/config ({marginal:5.2f} beyond the set-up, "
                      f"{1000 * f.own_seconds / f.configs:4.2f} in gensweep's searcher and sink), "
                      f"driver RSS {f.rss_before:.0f} -> {f.rss_after:.0f} MB "
                      f"({' / '.join(f'{q:.0f}' for q in f.rss_quarters)} at 25/50/75/100% of the sweep), "
                      f"trials files {f.files} -> {f.files_compacted} compacted", flush=True)
            one = run_one(args.single, 1, cluster.address, os.path.join(workdir, "single"))
            bare = plain_tune(args.single, workdir)
            print(f"one configuration per trial, {one.configs} configs: {1000 * one.seconds / one.configs:.1f} ms/config "
                  f"({1000 * (one.seconds - setup.seconds) / (one.configs - setup.configs):.1f} beyond the set-up); "
                  f"a bare Tuner running the same trials (no searcher, no records): {1000 * bare / one.configs:.1f} ms/config "
                  f"= Ray Tune's own share {bare / one.seconds:.0%}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    last = figures[-1]
    if len(figures) > 1:
        beyond = [(f.seconds - setup.seconds) / (f.configs - setup.configs) for f in figures]
        own = [f.own_seconds / f.configs for f in figures]
        print(f"flatness (largest / smallest ms per configuration over the sizes): beyond the set-up "
              f"{max(beyond) / min(beyond):.2f}x, gensweep's searcher and sink {max(own) / min(own):.2f}x, "
              f"with the set-up {max(f.seconds / f.configs for f in figures) / min(f.seconds / f.configs for f in figures):.2f}x")
    print(f"driver_ms_per_config={1000 * last.seconds / last.configs:.2f}")


if __name__ == "__main__":
    main()
