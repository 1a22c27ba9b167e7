"""Time a block of K toy flows trained together against the same K trained one at a time, and against library flows.

The naf-toy density configuration (core/naf/hparams.py TOY_DENSITY, naf_examples' DensityEstimator: 2-D, DSF,
hidden 64, 2 hidden layers, 2 flows, 16 sigmoid units, batch 64, lr 5e-3), K = 16 seeds, N steps each, all in this
process on the same data (a 4-Gaussian mixture, one minibatch per model and step):

- block: core.flows fit over the K stacked models (one batched Adam, per-model clipping);
- alone: the same fit, K = 1, one model after the other;
- pyro: pyro's NeuralAutoregressive (the same DSF transformer, 16 units) on AutoRegressiveNN(2, [64, 64]), 2 flows
  with a flip, torch.optim.Adam + clip_grad_norm_ 5, one model after the other (extra ``flows``);
- zuko: zuko.flows.MAF(2, transforms=2, hidden_features=(64, 64)) the same way (an affine flow: a library baseline
  for the per-step overhead, not the same model).

    OMP_NUM_THREADS=1 python benchmarks/naf_block.py [--k 16] [--steps 100] [--threads 1]

Prints wall and CPU (process) time per model-step of each case and ends with ``speedup=<alone / block wall time>``
(and the CPU-time ratio, steadier when other jobs share the cores).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from core.flows import model
from core.flows.spec import FlowSpec
from core.flows.train import fit
from core.naf.hparams import TOY_DENSITY

MEANS = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
WEIGHTS = torch.tensor([0.1, 0.3, 0.4, 0.2])


def mog(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    idx = torch.multinomial(WEIGHTS, int(torch.tensor(shape).prod()), replacement=True, generator=gen).view(shape)
    return MEANS[idx] + torch.randn(*shape, 2, generator=gen)


class Clock:
    """Wall time and this process's CPU time (the CPU time is what the work costs when other jobs share the cores)."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]
        return False


def time_block(spec: FlowSpec, seeds: list[int], steps: int, batch: int, lr: float, clock: Clock) -> Clock:
    params = model.init_block(spec, seeds)
    gen = torch.Generator().manual_seed(0)
    data = mog((steps, len(seeds), batch), gen)
    with clock:
        fit(params, lambda s: -model.log_prob(spec, params, data[s]).mean(1), steps, lr)
    return clock


def time_library(make, k: int, steps: int, batch: int, lr: float) -> Clock:
    """``make(seed)`` -> (module, nll(x) -> (N,)); torch.optim.Adam, clip 5, one model after the other."""
    clock = Clock()
    for seed in range(k):
        torch.manual_seed(seed)
        module, nll = make(seed)
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        data = mog((steps, batch), torch.Generator().manual_seed(seed))
        with clock:
            for s in range(steps):
                opt.zero_grad()
                nll(data[s]).mean().backward()
                torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
                opt.step()
    return clock


def pyro_dsf(spec: FlowSpec):
    from pyro.distributions.transforms import NeuralAutoregressive
    from pyro.nn import AutoRegressiveNN

    def make(seed):
        flows = torch.nn.ModuleList([NeuralAutoregressive(
            AutoRegressiveNN(spec.dim, [spec.hidden] * spec.hidden_layers, param_dims=[spec.ds_dim] * 3,
                             nonlinearity=torch.nn.ELU()), hidden_units=spec.ds_dim) for _ in range(spec.flows)])

        def nll(x):
            logdet = torch.zeros(x.shape[0])
            for f in flows:
                y = f(x)
                logdet = logdet + f.log_abs_det_jacobian(x, y)
                x = y.flip(-1)
            return -(model.log_normal(x) + logdet)
        return flows, nll
    return make


def zuko_maf(spec: FlowSpec):
    import zuko

    def make(seed):
        flow = zuko.flows.MAF(spec.dim, transforms=spec.flows, hidden_features=[spec.hidden] * spec.hidden_layers)
        return flow, lambda x: -flow().log_prob(x)
    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TOY_DENSITY
    spec = FlowSpec(dim=2, transformer="dsf", flows=cfg["flows"], hidden=cfg["hidden"], hidden_layers=cfg["hidden_layers"],
                    ds_dim=cfg["ds_dim"], ds_layers=cfg["ds_layers"])
    batch, lr, k, steps = cfg["batch"], cfg["lr"], args.k, args.steps
    print(f"naf-toy density flow {spec}, K={k}, {steps} steps, batch {batch}, threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    time_block(spec, list(range(2)), 3, batch, lr, Clock())  # warm-up
    per = lambda c: f"wall {c.wall:6.2f} s ({1e3 * c.wall / steps / k:5.2f} ms per model-step), cpu {c.cpu:6.2f} s ({1e3 * c.cpu / steps / k:5.2f})"
    block = time_block(spec, list(range(k)), steps, batch, lr, Clock())
    print(f"block K={k:<3d} {per(block)}", flush=True)
    alone = Clock()
    for seed in range(k):
        time_block(spec, [seed], steps, batch, lr, alone)
    print(f"alone x{k:<3d} {per(alone)}  speedup wall {alone.wall / block.wall:.2f}, cpu {alone.cpu / block.cpu:.2f}", flush=True)
    for name, make in (("pyro DSF", pyro_dsf), ("zuko MAF", zuko_maf)):
        try:
            lib = time_library(make(spec), k, steps, batch, lr)
        except ImportError as err:
            print(f"{name}: skipped ({err}; pip install -e '.[flows]')")
            continue
        print(f"{name} x{k:<3d} {per(lib)}  block speedup wall {lib.wall / block.wall:.2f}, cpu {lib.cpu / block.cpu:.2f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"speedup={alone.wall / block.wall:.2f} (cpu time: {alone.cpu / block.cpu:.2f})")


if __name__ == "__main__":
    main()
