"""GPU check: one prepared command that measures every GPU path of gensweep's plain-PyTorch layers.

Made for a short lease of a GPU machine that has PyTorch, numpy and pytest but
no Ray, MLflow, Optuna, gymnasium or dm_control (and nothing can be installed
there): run it from the repository root with the machine's own Python, no venv,

    python3 benchmarks/gpu_check.py --out DIR [--device cuda|cpu] [--quick] [--parts a,b,...]

It imports the project by path. Each part runs in a subprocess of its own under
a time budget (a part that overruns is killed and recorded as ``timeout``; the
others still run), prints its progress, and the figures land in
``DIR/gpu_check.json`` and ``DIR/gpu_check.md``. Parts:

1. ``device``: name, memory, torch / CUDA versions, the TF32 settings, and the
   measured matmul peak in float32 (TF32 off), TF32 and bfloat16.
2. ``tests``: ``pytest -m gpu`` (the CUDA variants of the core equality checks,
   TF32 off there).
3. ``search``: ``benchmarks/gpu_search.py``'s figures at the paper's data size
   (a synthetic MNIST-sized source): configurations per hour at K = 1 and in the
   default block, fraction of the peak, the projected §5.4.1 search.
4. ``rl``: the RL agent's update rate at the paper's networks and batch from a
   synthetic replay buffer, alone and with one agent per GPU fraction (several
   processes on the device), and the projected wall time of the paper's RL study.
5. ``memorization``: 100 one-epoch seeds of the 4096-unit MLP on 1,000 images as
   one stacked block, and a capacity grid, on the device.
6. ``domainbed``: the stacked DomainBed ConvNet block vs one trial at a time, when
   ``core.domainbed`` is present.

``--device cpu --quick`` runs every part at toy sizes in seconds (a default
test runs it so the script cannot rot between sessions that have a GPU).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402



def rl_study_updates() -> dict:
    """The paper's RL study (``rl-spurious --preset paper``) counted in agent updates, as core.rl.sac.Trainer makes them.

    Runs: tasks x methods x seeds; tuning runs: penalized methods x ``tune_samples`` on the tuning task, counted in
    full (ASHA only shortens them). Each run updates after every lock-step past ``max(random_steps, seq_len)``,
    ``updates_per_step`` times, 0 meaning one update per training domain (the REx code's loop); every update draws a
    batch from each training domain, as :func:`rl_updates_per_second` times it.
    """
    from core import methods
    from core.rl.sac import SACConfig
    from pipelines.engine.spec import resolve_settings
    from pipelines.rex.rl_spurious import PIPELINE

    s = resolve_settings(PIPELINE, "paper", [])
    runs = len(s["tasks"]) * len(s["methods"]) * s["seeds"]
    penalized = [m for m in s["methods"] if methods.get(m).penalized]
    tuning_runs = len(penalized) * s["tune_samples"] if "tune" in s["stages"] else 0
    per_lockstep = s["updates_per_step"] or len(s["train_factors"])
    updating = s["total_steps"] - max(s["random_steps"], SACConfig().seq_len)
    return {"runs": runs, "tuning_runs": tuning_runs, "lock_steps": s["total_steps"], "updating_lock_steps": updating,
            "updates_per_lockstep": per_lockstep, "updates": (runs + tuning_runs) * updating * per_lockstep}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], None], device: torch.device, reps: int) -> float:
    fn()
    best = math.inf
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def part_device(device: torch.device, quick: bool, say) -> dict:
    """The device and its measured matmul peaks (float32 with TF32 off, TF32, bfloat16)."""
    from core.cmnist import batched

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
           "tf32_default_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_default_cudnn": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, memory_gib=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count, cudnn=torch.backends.cudnn.version())
    else:
        out.update(name=f"CPU ({torch.get_num_threads()} torch threads)")
    say(f"{out['name']}; torch {out['torch']}, CUDA {out['cuda']}")
    size = 512 if quick else (8192 if device.type == "cuda" else 2048)
    for label, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)):
        if device.type != "cuda" and label == "tf32":
            continue
        a, b = (torch.rand(size, size, device=device).to(dtype) for _ in range(2))
        with batched.tf32_mode(tf32):
            seconds = _best_seconds(functools.partial(torch.mm, a, b), device, 3 if quick else 10)
        out[f"peak_{label}_tflops"] = 2.0 * size**3 / seconds / 1e12
        say(f"matmul peak {label} ({size}x{size}): {out[f'peak_{label}_tflops']:.2f} TFLOP/s")
    return out


def part_tests(device: torch.device, quick: bool, say) -> dict:
    """``pytest -m gpu`` on the CUDA variants (skipped, not failed, without CUDA)."""
    files = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_gpu*.py"))]
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=_env())
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or [proc.stderr.strip()[-200:]]
    say(f"pytest -m gpu: {tail[0]}")
    return {"returncode": proc.returncode, "summary": tail[0], "files": files,
            "failures": [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]}


def part_search(device: torch.device, quick: bool, say) -> dict:
    """K = 1 vs the default block of the §5.4.1 searches (benchmarks/gpu_search.py's measure)."""
    import numpy as np

    import gpu_search
    from core.data import ImageSource

    if quick:
        rng = np.random.default_rng(0)
        source = ImageSource("synthetic-small", rng.integers(0, 256, (1200, 28, 28), dtype=np.uint8), rng.integers(0, 10, 1200))
        return gpu_search.measure(device, source, steps=1, block=2, peak_size=256, say=say)
    return gpu_search.measure(device, gpu_search.mnist_sized_source(), steps=3, say=say)


def _rl_agent(device: torch.device, quick: bool):
    """An agent at the paper's networks (toy ones when quick) and two synthetic replay buffers, as one domain pair."""
    import numpy as np

    from core.rl.sac import Agent, ReplayBuffer, SACConfig

    config = SACConfig(device=str(device), **({"hidden": 64, "encoder_hidden": 32, "batch_size": 16} if quick else {}))
    obs_dim, act_dim, size = 6, 1, 2_000 if quick else 20_000  # cartpole swingup + one spurious entry
    rng = np.random.default_rng(0)
    buffers = []
    for _ in range(2):
        buffer = ReplayBuffer(size, obs_dim, act_dim, config.seq_len)
        for t in range(size):
            buffer.add(rng.normal(size=obs_dim), rng.uniform(-1, 1, act_dim), float(rng.uniform()), rng.normal(size=obs_dim),
                       False, t // 1000)
        buffers.append(buffer)
    return Agent(config, obs_dim, act_dim), buffers, config, rng


def rl_updates_per_second(device: torch.device, quick: bool, seconds: float) -> tuple[float, dict]:
    """Agent updates per second (each drawing a batch from both domains) over ``seconds`` after a warm-up."""
    agent, buffers, config, rng = _rl_agent(device, quick)
    batch = lambda: [b.sample(config.batch_size, rng) for b in buffers]
    for step in range(3):
        agent.update(batch(), step)
    _sync(device)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        agent.update(batch(), 3 + done)
        done += 1
    _sync(device)
    return done / (time.perf_counter() - start), {"hidden": config.hidden, "encoder_hidden": config.encoder_hidden,
                                                  "batch_size": config.batch_size, "seq_len": config.seq_len}


def part_rl(device: torch.device, quick: bool, say) -> dict:
    """One agent's update rate, the rate of ``agents`` concurrent agents (one per GPU fraction), the projected RL study."""
    seconds = 1.0 if quick else 20.0
    alone, shape = rl_updates_per_second(device, quick, seconds)
    say(f"one agent ({shape}): {alone:.1f} updates/s")
    agents = 2 if quick else 4
    procs = [subprocess.Popen([sys.executable, __file__, "--rl-worker", str(device), str(seconds)] + (["--quick"] if quick else []),
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env=_env()) for _ in range(agents)]
    rates = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    together = sum(rates)
    say(f"{agents} agents at once (gpus_per_trial={1 / agents:g}): {together:.1f} updates/s in all ({', '.join(f'{r:.1f}' for r in rates)})")
    study = rl_study_updates()
    updates = study["updates"]
    hours = updates / together / 3600
    say(f"paper RL study ({study['runs']} runs + {study['tuning_runs']} tuning runs x {study['updating_lock_steps']:,} "
        f"updating lock-steps x {study['updates_per_lockstep']} updates = {updates:,} updates): {hours:.3g} GPU-hours of "
        f"updates at {agents} agents per GPU ({updates / alone / 3600:.3g} at one agent per GPU)")
    return {"network": shape, "updates_per_s_one_agent": alone, "agents_per_gpu": agents, "updates_per_s_all_agents": together,
            "study": study, "updates_per_lockstep": study["updates_per_lockstep"], "study_updates": updates,
            "study_gpu_hours": hours, "study_gpu_hours_one_agent": updates / alone / 3600}


def part_memorization(device: torch.device, quick: bool, say) -> dict:
    """100 one-epoch seeds of the 4096-unit MLP on 1,000 images as one block; a capacity grid of widths x seeds."""
    from core.memorization import seeds as blocks
    from core.memorization.data import ImageSet

    gen = torch.Generator().manual_seed(0)
    n, runs, width = (200, 5, 64) if quick else (1000, 100, 4096)
    images = ImageSet("synthetic", torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen), 10)
    val = ImageSet("synthetic-val", torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen), 10)
    common = dict(batch_size=32, lr=0.01, device=device)
    _sync(device)
    start = time.perf_counter()
    blocks.train_seeds(images, val, width=width, seeds=list(range(runs)), epochs=1, **common)
    _sync(device)
    easy = time.perf_counter() - start
    say(f"easy examples: {runs} one-epoch seeds of {width} units on {n} images in {easy:.2f} s ({runs / easy:.1f} runs/s)")
    widths, grid_seeds, epochs = ([16, 64], [0, 1], 2) if quick else ([16, 64, 256, 1024, 4096], list(range(5)), 20)
    start = time.perf_counter()
    blocks.train_grid(images, val, widths=widths, seeds=grid_seeds, epochs=epochs, **common)
    _sync(device)
    grid = time.perf_counter() - start
    say(f"capacity grid: widths {widths} x {len(grid_seeds)} seeds x {epochs} epochs in {grid:.2f} s")
    return {"easy_runs": runs, "easy_width": width, "easy_images": n, "easy_seconds": easy, "easy_runs_per_s": runs / easy,
            "grid_widths": widths, "grid_seeds": len(grid_seeds), "grid_epochs": epochs, "grid_seconds": grid}


def part_domainbed(device: torch.device, quick: bool, say) -> dict:
    """The stacked DomainBed block vs one trial at a time, vs a DomainBed-like loop (benchmarks/domainbed_sweep.py's measure)."""
    import domainbed_sweep

    return domainbed_sweep.measure(device, quick=quick, say=say)


PARTS: dict[str, tuple[Callable, float]] = {  # name -> (function, time budget in seconds on the GPU machine)
    "device": (part_device, 45), "tests": (part_tests, 120), "search": (part_search, 110),
    "rl": (part_rl, 75), "memorization": (part_memorization, 75), "domainbed": (part_domainbed, 55),
}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONUNBUFFERED": "1"}


def run_part(name: str, device: str, quick: bool, budget: float, started: float) -> dict:
    """Run one part in a subprocess under ``budget`` seconds, echoing its progress; its result (or why there is none)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_file = handle.name
    command = [sys.executable, __file__, "--part", name, "--device", device, "--part-out", result_file] + (["--quick"] if quick else [])
    begin = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in _lines_until(proc, begin + budget):
            lines.append(line)
            print(f"[gpu_check {time.time() - started:5.0f}s] {name}: {line}", flush=True)
        status = "ok" if proc.wait(timeout=5) == 0 else "error"
    except TimeoutError:
        proc.kill()
        proc.wait()
        status = "timeout"
    seconds = time.perf_counter() - begin
    result = {}
    if status == "ok":
        result = json.loads(Path(result_file).read_text())
    Path(result_file).unlink(missing_ok=True)
    return {"status": status, "seconds": seconds, "budget_s": budget if math.isfinite(budget) else None, "result": result,
            "log_tail": lines[-15:]}


def _budget_text(budget: float | None) -> str:
    return "no budget" if budget is None or not math.isfinite(budget) else f"budget {budget:.0f} s"


def _lines_until(proc: subprocess.Popen, deadline: float):
    """The process's output lines as they come; TimeoutError once ``deadline`` passes."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        if selector.select(timeout=min(left, 1.0)):
            line = proc.stdout.readline()
            if not line:
                return
            yield line.rstrip()
        elif proc.poll() is not None:
            rest = proc.stdout.read()
            yield from (line for line in rest.splitlines() if line.strip())
            return


def markdown(results: dict) -> str:
    """The figures as a markdown table, one row per figure."""
    rows = []
    for name, part in results["parts"].items():
        rows.append(f"| {name} | status | {part['status']} ({part['seconds']:.0f} s, {_budget_text(part['budget_s'])}) |")
        for key, value in _flat(part["result"]):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append(f"| {name} | {key} | {shown} |")
    head = f"# GPU check ({results['device']}{', quick' if results['quick'] else ''})\n\n"
    return head + "| part | figure | value |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def _flat(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a check that the script works, in seconds")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget (slow machines)")
    parser.add_argument("--no-budget", action="store_true", help="run every part to its end, however long (a check on a "
                        "loaded machine, not a lease)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    parser.add_argument("--rl-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and (args.rl_worker[0] if args.rl_worker else args.device) == "cpu":
        torch.set_num_threads(1)  # a CPU check, not a measurement: more threads spin idle on a loaded machine (10x slower)
    if args.rl_worker:  # one of the concurrent agents of part rl
        rate, _ = rl_updates_per_second(torch.device(args.rl_worker[0]), args.quick, float(args.rl_worker[1]))
        print(rate)
        return 0
    from core.device import resolve_device

    device = resolve_device(args.device)
    if args.part:  # inside a part's subprocess
        result = PARTS[args.part][0](device, args.quick, lambda text: print(text, flush=True))
        Path(args.part_out).write_text(json.dumps(result, default=str))
        return 0
    if not args.out:
        parser.error("--out DIR is required")
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = {"device": str(device), "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}
    for name in names:
        budget = math.inf if args.no_budget else PARTS[name][1] * args.budget_scale
        print(f"[gpu_check {time.time() - started:5.0f}s] {name}: starting ({_budget_text(budget)})", flush=True)
        results["parts"][name] = run_part(name, str(device), args.quick, budget, started)
        print(f"[gpu_check {time.time() - started:5.0f}s] {name}: {results['parts'][name]['status']}", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))  # after every part: a cut run keeps its figures
    (out / "gpu_check.md").write_text(markdown(results))
    failed = [n for n, p in results["parts"].items() if p["status"] != "ok"]
    print(f"[gpu_check {time.time() - started:5.0f}s] done: {len(names) - len(failed)} of {len(names)} parts ok"
          + (f"; not ok: {', '.join(failed)}" if failed else "") + f"; figures in {out}/gpu_check.json and gpu_check.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
