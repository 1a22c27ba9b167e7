"""DomainBed's training loop (``scripts/train.py``) for a block of runs, stacked: equal to training each run alone.

A run (:class:`Run`) is one DomainBed job: a dataset, an algorithm (a
:mod:`core.methods` DomainBed entry), its test environments, its seed, its
trial seed (the in/out splits) and its hyperparameters. Every step, each run
draws a minibatch of ``batch_size`` examples, uniformly with replacement,
from the in-split of every training environment (DomainBed's
``InfiniteDataLoader``), and takes one Adam step (weight decay 0, as DomainBed
uses on MNIST) on its algorithm's loss; IRM, V-REx and MM-REx re-create Adam
(zero moments, step count 1) at their anneal step. At every
``checkpoint_freq``-th step and the last, each run's accuracy on every
environment's in- and out-split is measured (``env{i}_in_acc``,
``env{i}_out_acc``, as train.py's results.jsonl) together with the mean
loss, risk and penalty over the steps since the previous checkpoint.

Stacking: runs with the same batch size and number of training environments
form a group; a group's models are one stacked ConvNet
(:func:`core.domainbed.model.stacked_forward`), one backward, one Adam update
with a learning rate, step count and reset per model. A group larger than the
memory budget is cut into sub-groups; all groups take their steps in turn.
Each run keeps its own data (shuffle, noise, splits), initialisation and
minibatch stream (a ``torch.Generator`` per run), so its numbers do not
depend on the block it is trained in (to float tolerance: grouped
convolutions sum in another order).

Randomness of a run with seed s: the environments as DomainBed builds them
from ``torch.Generator().manual_seed(s)`` (:mod:`core.domainbed.data`), the
initialisation under ``torch.manual_seed(s)``, and its minibatches from a
generator seeded ``seed_hash(s, "minibatches")``. (DomainBed's init and
minibatches continue torch's global stream; only the data equals theirs.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from core import methods
from core.domainbed import model as cnn
from core.domainbed.data import CHANNELS, ENVIRONMENTS, NUM_CLASSES, BaseImages, environments
from core.domainbed.hparams import HOLDOUT_FRACTION, seed_hash
from core.objectives import irm_split_penalty
from core.optim import BatchedAdam

EVAL_EXAMPLES = 2048  # examples (summed over the models of a group) per evaluation forward pass


@dataclass(frozen=True)
class Run:
    """One DomainBed run: what train.py gets as arguments and hyperparameters."""

    dataset: str
    method: str  # a core.methods DomainBed entry
    test_envs: tuple[int, ...]
    seed: int
    trial_seed: int
    lr: float
    batch_size: int
    penalty_weight: float = 0.0  # the method's lambda (irm_lambda, vrex_lambda, mmrex_lambda)
    anneal_iters: int = 0  # the method's penalty_anneal_iters
    eta: float = 0.0  # groupdro_eta

    def train_envs(self) -> list[int]:
        return [i for i in range(len(ENVIRONMENTS[self.dataset])) if i not in self.test_envs]


def run_from_config(config: dict) -> Run:
    """A Run from a flat config with DomainBed's hyperparameter names (``irm_lambda``, ``vrex_penalty_anneal_iters``, ...).

    The anneal step used is int(drawn * ``anneal_scale``) (default 1: DomainBed's; shorter trainings scale it).
    """
    entry = methods.domainbed(config["method"])
    test_envs = config["test_envs"]
    if isinstance(test_envs, str):
        test_envs = [int(t) for t in test_envs.split(",") if t != ""]
    return Run(
        dataset=str(config["dataset"]), method=entry.name, test_envs=tuple(int(t) for t in test_envs),
        seed=int(config["seed"]), trial_seed=int(config["trial_seed"]), lr=float(config["lr"]), batch_size=int(config["batch_size"]),
        penalty_weight=float(config.get(entry.lambda_key, 0.0)) if entry.lambda_key else 0.0,
        anneal_iters=int(int(config.get(entry.anneal_key, 0)) * float(config.get("anneal_scale", 1.0))) if entry.anneal_key else 0,
        eta=float(config.get("groupdro_eta", 0.0)) if entry.groupdro else 0.0,
    )


def checkpoint_steps(steps: int, checkpoint_freq: int) -> list[int]:
    """train.py's checkpoints: every step with step % checkpoint_freq == 0, and the last step."""
    return sorted({s for s in range(0, steps, checkpoint_freq)} | {steps - 1})


class _Tables:
    """The runs' environments as (K, n_envs, n) tensors on the device: base positions, labels, colours, split keys."""

    def __init__(self, base: BaseImages, runs: Sequence[Run], holdout_fraction: float, device):
        per_run = [environments(base, r.seed, r.trial_seed, holdout_fraction) for r in runs]
        n_envs = len(per_run[0])
        pad = lambda rows: torch.stack([torch.nn.functional.pad(t, (0, max(len(u) for u in rows) - len(t))) for t in rows])
        table = lambda get: torch.stack([pad([get(env) for env in envs]) for envs in per_run]).to(device)
        self.index, self.y = table(lambda e: e.index), table(lambda e: e.y)
        self.color = table(lambda e: e.color) if per_run[0][0].color is not None else None
        self.in_keys, self.out_keys = table(lambda e: e.in_keys), table(lambda e: e.out_keys)
        self.n_in = [len(e.in_keys) for e in per_run[0]]  # equal for every run: sizes depend on the source only
        self.n_out = [len(e.out_keys) for e in per_run[0]]
        self.view = torch.tensor([e.view for e in per_run[0]], device=device)
        self.n_envs = n_envs

    def inputs(self, base: BaseImages, envs: torch.Tensor, positions: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (K, E, B, C, 28, 28) and labels (K, E, B) of each run's environment ``envs[k, j]`` at ``positions[k, j]``."""
        k = torch.arange(len(envs), device=envs.device).view(-1, 1, 1)
        e = envs.unsqueeze(-1)
        where = self.index[k, e, positions]
        images = base.views[self.view[e].expand_as(where), where].to(dtype).div_(255.0)
        y = self.y[k, e, positions]
        if self.color is None:
            return images.unsqueeze(3), y
        color = self.color[k, e, positions].unsqueeze(-1).unsqueeze(-1)
        return torch.stack([images * (color == 0), images * (color == 1)], dim=3), y


class _Group:
    """Runs of one batch size and training-environment count, trained as one stacked model."""

    def __init__(self, base: BaseImages, runs: Sequence[Run], members: list[int], holdout_fraction: float, width: float, device,
                 stacked: bool, dtype: torch.dtype):
        self.members, self.runs, self.stacked, self.dtype = members, [runs[i] for i in members], stacked, dtype
        self.method = methods.domainbed(self.runs[0].method)
        dataset = self.runs[0].dataset
        self.tables = _Tables(base, self.runs, holdout_fraction, device)
        init = [cnn.init_params(CHANNELS[dataset], NUM_CLASSES[dataset], r.seed, width) for r in self.runs]
        self.params = [p.to(device, dtype).requires_grad_() for p in cnn.stack_params(init)]
        self.adam = BatchedAdam(self.params, [r.lr for r in self.runs])
        k = len(self.runs)
        vector = lambda values, kind=dtype: torch.tensor(values, dtype=kind, device=device)
        self.penalty_weight = vector([r.penalty_weight for r in self.runs])
        self.anneal = vector([r.anneal_iters for r in self.runs], torch.long)
        self.eta = vector([r.eta for r in self.runs])
        self.train_envs = torch.tensor([r.train_envs() for r in self.runs], device=device)  # (K, E)
        self.n_in = torch.tensor([[self.tables.n_in[e] for e in r.train_envs()] for r in self.runs], dtype=torch.float32)
        self.q = torch.ones(k, self.train_envs.shape[1], device=device, dtype=dtype) if self.method.groupdro else None
        self.batch_size = self.runs[0].batch_size
        self.generators = [torch.Generator().manual_seed(seed_hash(r.seed, "minibatches")) for r in self.runs]
        self.sums = torch.zeros(3, k, dtype=torch.float64, device=device)  # loss, nll, penalty since the last checkpoint
        self.count = 0
        self.device = device

    def step(self, base: BaseImages, step: int) -> None:
        k, e = self.train_envs.shape
        u = torch.stack([torch.rand(e, self.batch_size, generator=g) for g in self.generators])  # (K, E, B)
        drawn = (u * self.n_in.unsqueeze(-1)).long().to(self.device)  # uniform over each in-split, with replacement
        runs = torch.arange(k, device=self.device).view(-1, 1, 1)
        positions = self.tables.in_keys[runs, self.train_envs.unsqueeze(-1), drawn]
        x, y = self.tables.inputs(base, self.train_envs, positions, self.dtype)
        b = self.batch_size
        x = x.permute(1, 2, 0, 3, 4, 5).reshape(e * b, k, *x.shape[3:])  # (E*B, K, C, 28, 28): env-major, as train.py's cat
        logits = self.forward(x).view(k, e, b, -1)
        risks = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(k, e, b).mean(-1)
        irm = irm_split_penalty(logits, y) if self.method.needs_irm else None
        loss, penalty, q = methods.domainbed_objective(
            self.method.name, risks, irm, step=step, penalty_weight=self.penalty_weight, anneal_iters=self.anneal,
            q=self.q, eta=self.eta,
        )
        grads = torch.autograd.grad(loss.sum(), self.params)
        with torch.no_grad():
            if q is not None:
                self.q = q
            if self.method.resets_adam:  # Adam re-created at the anneal step (before this step's update)
                reset = self.anneal == step
                if bool(reset.any()):
                    self.adam.reset(reset)
            self.adam.step(grads)
            self.sums += torch.stack([loss.detach(), risks.detach().mean(-1), penalty.detach()]).double()
            self.count += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, N, classes) of the group's models on their inputs (N, K, C, 28, 28): one stacked pass, or model by model."""
        if self.stacked or len(self.runs) == 1:
            return cnn.stacked_forward(self.params, x)
        return torch.cat([cnn.stacked_forward([p[i:i + 1] for p in self.params], x[:, i:i + 1]) for i in range(len(self.runs))])

    @torch.no_grad()
    def evaluate(self, base: BaseImages) -> list[dict[str, float]]:
        """Each run's accuracy on every environment's in- and out-split, and its means since the last checkpoint."""
        k = len(self.runs)
        chunk = max(1, EVAL_EXAMPLES // k)
        rows = [dict() for _ in range(k)]
        for env in range(self.tables.n_envs):
            for split, keys, n in (("in", self.tables.in_keys, self.tables.n_in[env]), ("out", self.tables.out_keys, self.tables.n_out[env])):
                correct = torch.zeros(k, dtype=torch.long, device=self.device)
                for start in range(0, n, chunk):
                    positions = keys[:, env, start:min(n, start + chunk)].unsqueeze(1)  # (K, 1, n)
                    envs = torch.full((k, 1), env, device=self.device, dtype=torch.long)
                    x, y = self.tables.inputs(base, envs, positions, self.dtype)
                    logits = self.forward(x[:, 0].transpose(0, 1))
                    correct += (logits.argmax(-1) == y[:, 0]).sum(-1)
                for row, value in zip(rows, correct.tolist()):
                    row[f"env{env}_{split}_acc"] = value / n
        means = (self.sums / max(1, self.count)).tolist()
        for i, row in enumerate(rows):
            row.update(loss=means[0][i], nll=means[1][i], penalty=means[2][i])
        self.sums.zero_()
        self.count = 0
        return rows


def plan_groups(runs: Sequence[Run], width: float = 1.0, memory_bytes: float | None = None) -> list[list[int]]:
    """Run indices per group: equal batch size and training-environment count, cut to fit ``memory_bytes``."""
    by_key: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        by_key.setdefault((r.batch_size, len(r.train_envs())), []).append(i)
    groups = []
    for (batch, envs), members in by_key.items():
        per_model = batch * envs * cnn.activation_bytes_per_example(width, CHANNELS[runs[members[0]].dataset])
        size = len(members) if not memory_bytes else max(1, int(memory_bytes // per_model))
        groups += [members[i:i + size] for i in range(0, len(members), size)]
    return groups


CheckpointCallback = Callable[[int, list[dict]], None]


def train_block(
    base: BaseImages, runs: Sequence[Run], *, steps: int, checkpoint_freq: int, holdout_fraction: float = HOLDOUT_FRACTION,
    width: float = 1.0, device: torch.device | str = "cpu", on_checkpoint: CheckpointCallback | None = None,
    memory_bytes: float | None = None, stacked: bool | None = None, dtype: torch.dtype = torch.float32,
) -> list[dict]:
    """Train ``runs`` (one dataset and method) together; return each run's metrics at its last checkpoint, in order.

    ``on_checkpoint(step, rows)`` gets, at every checkpoint, one dict per run
    (in order): ``step``, ``epoch``, ``env{i}_in_acc``, ``env{i}_out_acc``,
    ``loss``, ``nll``, ``penalty``. ``base`` is :func:`core.domainbed.data.base_images`
    of the source; plain PyTorch, CPU or CUDA (``device``). ``stacked``: a
    group's models as one grouped-convolution pass (default on CUDA), or one
    model after another (default on CPU, where grouped convolutions of few
    channels per group are slower than separate ones: see
    benchmarks/domainbed_sweep.py); the data, losses and Adam are stacked either way.
    ``dtype``: float32 (DomainBed's), or float64 for exact comparisons.
    """
    if not runs:
        return []
    if len({(r.dataset, r.method) for r in runs}) != 1:
        raise ValueError("a block trains runs of one dataset and one method")
    device = torch.device(device)
    base = base if base.views.device == device else base.to(device)
    stacked = device.type == "cuda" if stacked is None else bool(stacked)
    groups = [_Group(base, runs, members, holdout_fraction, width, device, stacked, dtype)
              for members in plan_groups(runs, width, memory_bytes)]
    checkpoints = set(checkpoint_steps(steps, checkpoint_freq))
    rows: list[dict] = [{} for _ in runs]
    for step in range(steps):
        for group in groups:
            group.step(base, step)
        if step in checkpoints:
            for group in groups:
                per_epoch = min(group.tables.n_in) / group.batch_size  # train.py's steps_per_epoch
                for i, row in zip(group.members, group.evaluate(base)):
                    rows[i] = {"step": step, "epoch": step / per_epoch, **row}
            if on_checkpoint is not None:
                on_checkpoint(step, [dict(r) for r in rows])
    return rows
