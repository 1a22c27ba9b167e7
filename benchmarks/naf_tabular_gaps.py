"""Where naf-tabular's entropy gap comes from: one configuration at mixture6's size, no Ray, train / validation / test
NLL each minus the true log-density of the same points, every epoch (docs/results/naf.md, "the 0.073 gap").

The trainable's recipe (tasks.naf.tabular_run: N5's defaults, core.flows.train.fit, the same seeds for init and
minibatch order; K = 1, which a block of K equals), with the training NLL over all training points added, so
overfitting (train well below validation) and underfitting (both above the truth) can be told apart:

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/naf_tabular_gaps.py [--train 20000] [--epochs 50] [--seed 0] [--transformer dsf]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.flows import model as flow
from core.flows.train import fit
from core.naf import data as ndata
from core.naf import hparams
from core.naf.metrics import EVAL_CHUNK
from tasks.naf import epoch_minibatches, spec_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20_000, help="mixture6 training points")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transformer", default="dsf")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = hparams.NAF_TABULAR
    d = ndata.load_tabular("mixture6", None, n_train=args.train)
    spec = spec_of(dict(n, transformer=args.transformer), d.dim)
    params = flow.init_block(spec, [args.seed])
    x = {k: torch.from_numpy(np.ascontiguousarray(getattr(d, k))) for k in ("train", "val", "test")}
    truth = {k: float(np.mean(ndata.mixture6_log_prob(getattr(d, k)))) for k in x}
    print("true mean log-density", {k: round(v, 4) for k, v in truth.items()}, flush=True)
    batch = int(n["batch"])
    per_epoch = len(x["train"]) // batch
    minibatch = epoch_minibatches(len(x["train"]), batch, [torch.Generator().manual_seed(1_000_003 * args.seed + 41)])

    def nll(points: torch.Tensor) -> torch.Tensor:
        return -torch.cat([flow.log_prob(spec, params, points[i:i + EVAL_CHUNK]).double()
                           for i in range(0, len(points), EVAL_CHUNK)], 1).mean(1)

    start = time.time()

    def on_eval(step: int, val_nll: torch.Tensor) -> None:
        with torch.no_grad():
            train, test = float(nll(x["train"])[0]), float(nll(x["test"])[0])
        val = float(val_nll[0])
        print(f"epoch {(step + 1) // per_epoch:3d} train_nll-truth {train + truth['train']:+.4f} val_nll-truth "
              f"{val + truth['val']:+.4f} test_nll-truth {test + truth['test']:+.4f}  (train {train:.4f} val {val:.4f}) "
              f"t={time.time() - start:.0f}s", flush=True)

    fit(params, lambda s: -flow.log_prob(spec, params, x["train"][minibatch(s)]).mean(1), args.epochs * per_epoch,
        float(n["lr"]), clip=float(n["clip"]), eval_fn=lambda: nll(x["val"]), eval_every=per_epoch, on_eval=on_eval)


if __name__ == "__main__":
    main()
