"""The shared full-batch training loop for Colored MNIST-style domain generalization.

One call trains a block of K models (K = 1 for a single configuration), each
with its own hidden size, seed, learning rate, L2 weight, penalty weight and
anneal step; models never interact (a loss that is a sum of per-model losses,
per-model Adam), so a model's numbers do not depend on the block it was
trained in. The block runs either as a Python loop over per-model tensors
(:class:`LoopModels`) or as batched kernels over stacked tensors
(:class:`core.cmnist.batched.StackedModels`, chosen by ``batched``), grouped by
hidden width or padded to the widest (``grouping``) and cut into sub-blocks
that fit a memory budget (``memory_bytes``); the sub-blocks run one after
another within each step, and the metrics of every model come back in block
order whichever way it ran.

Metrics at step s are computed on the forward pass of step s, before its
update, exactly as the IRM reference prints them; the test domains are only
evaluated at eval steps (every ``eval_every`` steps and the last step).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from core.cmnist import batched as batched_models
from core import memory, methods
from core.cmnist import hparams
from core.cmnist import models
from core.cmnist.domains import Domain, Domains
from core.device import default_device
from core.objectives import irm_penalty, mean_accuracy, mean_nll
from core.optim import BatchedAdam


@dataclass(frozen=True)
class ModelConfig:
    """One configuration's hyperparameters (IRM code names in brackets)."""

    hidden: int = hparams.IRM["hidden"]  # [hidden_dim]
    l2: float = hparams.IRM["l2"]  # [l2_regularizer_weight]
    lr: float = hparams.IRM["lr"]  # [lr]
    anneal_iters: int = hparams.IRM["anneal_iters"]  # [penalty_anneal_iters]
    penalty_weight: float = hparams.IRM["penalty_weight"]  # [penalty_weight]
    seed: int = 0  # model initialisation


class LoopModels:
    """K models as separate tensors, each at its own padded width, run one after another (the K = 1 path)."""

    batched = False

    def __init__(self, in_dim: int, hiddens: Sequence[int], seeds: Sequence[int], lrs: Sequence[float], device):
        self.models = [[p.to(device).requires_grad_() for p in params] for params in models.init_block(in_dim, list(hiddens), list(seeds))]
        self.params = [p for params in self.models for p in params]
        self.adams = [BatchedAdam([p.detach().unsqueeze(0) for p in params], [float(lr)]) for params, lr in zip(self.models, lrs)]

    def forward(self, x: models.Inputs) -> torch.Tensor:
        return models.forward(self.models, x)

    def squared_norm(self) -> torch.Tensor:
        return models.squared_norm(self.models)

    def update(self, grads) -> None:
        """One Adam step of every model with ``grads`` (one per tensor of :attr:`params`), each model its own Adam."""
        n = len(self.models[0])
        for i, adam in enumerate(self.adams):
            adam.step([g.unsqueeze(0) for g in grads[i * n:(i + 1) * n]])


def _domain_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "nll": mean_nll(logits, y),
        "acc": mean_accuracy(logits, y),
        "penalty": irm_penalty(logits, y),
    }


def _rows(metrics: dict[str, torch.Tensor], k: int) -> list[dict[str, float]]:
    cpu = {name: value.detach().float().cpu().tolist() for name, value in metrics.items()}
    return [{name: values[i] for name, values in cpu.items()} for i in range(k)]


def batch_inputs(domains: list[Domain], grayscale: bool, device: torch.device) -> tuple[models.Inputs, list[torch.Tensor]]:
    """The domains' examples as one input batch, in domain order, and each domain's targets.

    Within a domain, examples are grouped by their active channel (the channel
    form of :mod:`core.cmnist.models`) unless some image uses two channels or the
    method is the grayscale oracle; per-domain means do not depend on the order.
    """
    orders = [None if grayscale else models.channel_order(d.x) for d in domains]
    if any(order is None for order in orders):
        x = torch.cat([models.flatten_inputs(d.x, grayscale) for d in domains])
        return models.Inputs(x).to(device), [d.y.to(device) for d in domains]
    x = torch.cat([d.x[order] for d, order in zip(domains, orders)])
    return models.channel_inputs(x).to(device), [d.y[order].to(device) for d, order in zip(domains, orders)]


EvalCallback = Callable[[int, list[dict[str, float]]], None]


def use_batched(k: int, device: torch.device, batched: bool | None = None) -> bool:
    """Whether a block of ``k`` models runs as batched kernels: ``batched``, or by default on CUDA when k > 1.

    On CPU the loop is at least as fast (measured: process CPU time of one forward and
    backward, one thread, N = 5,000, K = 8): equal widths (390), batched 1.17x the
    loop's time; mixed widths 64..480 padded to the widest, 3.7x (3.2x the products,
    times CPU ``bmm``'s 1.17x); grouped by width (one model per group), 0.91x. So the
    loop stays the default there; on GPUs one batched kernel replaces K launches.
    """
    if batched is not None:
        return bool(batched) and k > 0
    return k > 1 and torch.device(device).type == "cuda"


def train_block(
    domains: Domains,
    method: str,
    configs: list[ModelConfig],
    steps: int,
    eval_every: int = 100,
    on_eval: EvalCallback | None = None,
    device: torch.device | None = None,
    reduction: str = "method",
    batched: bool | None = None,
    grouping: str = "pad",
    memory_bytes: float | None = None,
    tf32: bool | None = None,
) -> list[dict[str, float]]:
    """Train ``len(configs)`` models of one method on ``domains``; return each model's final metrics.

    ``reduction`` combines the training-domain risks: "mean" (IRM code),
    "sum" (REx code) or "method" (the method's reference code; see core.methods).
    ``batched``: stacked tensors and batched kernels (True), a loop over
    per-model tensors (False), or by :func:`use_batched` (None: batched on CUDA
    for K > 1). ``grouping`` (batched only): "pad" one group padded to the
    widest model, "width" one group per padded width, "bucket" groups of
    similar widths (:func:`core.cmnist.batched.group_by_width`). ``memory_bytes``: budget
    of one sub-block's activations (:func:`core.cmnist.batched.activation_bytes`);
    a block over it is cut into sub-blocks run one after another (None: no
    limit). ``tf32``: TF32 products on CUDA (None: on); never on CPU
    (:func:`core.cmnist.batched.tf32_enabled`).

    Metrics per model: ``step``, ``train_acc``/``train_nll``/``train_penalty``
    (means over training domains), ``<domain>_acc``/``_nll``/``_penalty`` for
    every domain (penalty = IRMv1 penalty of that domain), ``test_acc``/``test_nll``
    (mean over test domains), ``rex_penalty`` (the objective's penalty term) and ``min_acc`` (the lowest
    accuracy over the training and test domains: the IRM random search's selection criterion); with held-out
    parts of the training domains (``domains.val``), their ``<name>_acc`` etc. and ``val_acc`` (their mean).
    ``on_eval(step, metrics)`` is called at every eval step, the last included.
    """
    reduction = methods.resolve_reduction(method, reduction)
    device = torch.device(device) if device is not None else default_device()
    grayscale = methods.get(method).input == "grayscale"
    channels = domains.train[0].x.shape[1]
    x_train, y_train = batch_inputs(domains.train, grayscale, device)
    sizes = [len(y) for y in y_train]
    tests, vals = [], []
    for d in domains.test:
        x, (y,) = batch_inputs([d], grayscale, device)
        tests.append((d.name, x, y))
    for d in domains.val:
        x, (y,) = batch_inputs([d], grayscale, device)
        vals.append((d.name, x, y))

    k = len(configs)
    in_dim = models.input_dim(channels, grayscale)
    stacked = use_batched(k, device, batched)
    hiddens = [c.hidden for c in configs]
    n_rows = max([sum(sizes)] + [len(y) for _, _, y in tests + vals])
    plan = batched_models.plan_block(hiddens, n_rows, grouping if stacked else "pad", memory_bytes)
    kind = batched_models.StackedModels if stacked else LoopModels
    groups = []
    for index in plan:
        part = [configs[i] for i in index]
        as_vec = lambda name, part=part: torch.tensor([getattr(c, name) for c in part], dtype=torch.float32, device=device)
        groups.append(dict(
            index=index, models=kind(in_dim, [c.hidden for c in part], [c.seed for c in part], [c.lr for c in part], device),
            l2=as_vec("l2"), pw=as_vec("penalty_weight"), anneal=as_vec("anneal_iters"),
        ))

    final: list[dict[str, float]] = [{} for _ in configs]
    with memory.reuse_freed_memory(), batched_models.tf32_mode(batched_models.tf32_enabled(device, tf32)):
        for step in range(steps):
            evaluating = step % eval_every == 0 or step == steps - 1
            for group in groups:
                rows = _group_step(group, step, method, reduction, x_train, y_train, sizes, tests, domains, evaluating, vals)
                if evaluating:
                    for i, row in zip(group["index"], rows):
                        final[i] = row
            if evaluating and on_eval is not None:
                on_eval(step, [dict(row) for row in final])
    return final


def _group_step(group, step, method, reduction, x_train, y_train, sizes, tests, domains, evaluating, vals=()):
    """One training step of one (sub-)block; its metric rows when ``evaluating`` (before the update)."""
    block = group["models"]
    k = len(group["index"])
    logits = block.forward(x_train).split(sizes, dim=1)
    per_domain = [_domain_metrics(lg, y) for lg, y in zip(logits, y_train)]
    risks = torch.stack([d["nll"] for d in per_domain], dim=-1)
    irm = torch.stack([d["penalty"] for d in per_domain], dim=-1)
    loss, penalty = methods.objective(
        method, risks, irm, block.squared_norm(), step=step, l2=group["l2"], penalty_weight=group["pw"],
        anneal_iters=group["anneal"], reduction=reduction,
    )
    grads = torch.autograd.grad(loss.sum(), block.params)

    rows = None
    if evaluating:
        metrics: dict[str, torch.Tensor] = {"step": torch.full((k,), float(step))}
        for d, values in zip(domains.train, per_domain):
            metrics.update({f"{d.name}_{name}": value for name, value in values.items()})
        metrics["train_acc"] = torch.stack([d["acc"] for d in per_domain]).mean(0)
        metrics["train_nll"] = risks.mean(-1)
        metrics["train_penalty"] = irm.mean(-1)
        metrics["rex_penalty"] = penalty
        with torch.no_grad():
            test_acc, test_nll = [], []
            for name, x, y in tests:
                values = _domain_metrics(block.forward(x), y)
                metrics.update({f"{name}_{key}": value for key, value in values.items()})
                test_acc.append(values["acc"])
                test_nll.append(values["nll"])
            metrics["test_acc"] = torch.stack(test_acc).mean(0)
            metrics["test_nll"] = torch.stack(test_nll).mean(0)
            val_acc = []
            for name, x, y in vals:  # held-out parts of the training domains: not in test_acc or min_acc
                values = _domain_metrics(block.forward(x), y)
                metrics.update({f"{name}_{key}": value for key, value in values.items()})
                val_acc.append(values["acc"])
            if val_acc:
                metrics["val_acc"] = torch.stack(val_acc).mean(0)
        domain_accs = [d["acc"] for d in per_domain] + test_acc
        metrics["min_acc"] = torch.stack(domain_accs).min(0).values
        rows = _rows(metrics, k)

    block.update(grads)
    return rows


def config_from_dict(config: dict) -> ModelConfig:
    """The ModelConfig fields of a flat config dict (other keys are ignored)."""
    fields = asdict(ModelConfig())
    return ModelConfig(**{name: type(default)(config[name]) for name, default in fields.items() if name in config})
