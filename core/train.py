"""The shared full-batch training loop for Colored MNIST-style domain generalization.

One call trains a block of K models (K = 1 for a single configuration), each
with its own hidden size, seed, learning rate, L2 weight, penalty weight and
anneal step; models never interact (separate tensors, a loss that is a sum of
per-model losses, per-model Adam), so a model's numbers do not depend on the
block it was trained in.

Metrics at step s are computed on the forward pass of step s, before its
update, exactly as the IRM reference prints them; the test domains are only
evaluated at eval steps (every ``eval_every`` steps and the last step).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from core import hparams, memory, methods, models
from core.cmnist import Domain, Domains
from core.objectives import irm_penalty, mean_accuracy, mean_nll

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class ModelConfig:
    """One configuration's hyperparameters (IRM code names in brackets)."""

    hidden: int = hparams.CMNIST_IRM["hidden"]  # [hidden_dim]
    l2: float = hparams.CMNIST_IRM["l2"]  # [l2_regularizer_weight]
    lr: float = hparams.CMNIST_IRM["lr"]  # [lr]
    anneal_iters: int = hparams.CMNIST_IRM["anneal_iters"]  # [penalty_anneal_iters]
    penalty_weight: float = hparams.CMNIST_IRM["penalty_weight"]  # [penalty_weight]
    seed: int = 0  # model initialisation


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def adam_step(params: list[torch.Tensor], grads, m, v, step: int, lr: float) -> None:
    """One torch.optim.Adam update (default betas and eps) of one model's tensors."""
    b1, b2 = ADAM_BETAS
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    for p, g, mi, vi in zip(params, grads, m, v):
        mi.mul_(b1).add_(g, alpha=1 - b1)
        vi.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (vi.sqrt() / bc2**0.5).add_(ADAM_EPS)
        p.addcdiv_(mi, denom, value=-lr / bc1)


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
    form of :mod:`core.models`) unless some image uses two channels or the
    method is the grayscale oracle; per-domain means do not depend on the order.
    """
    orders = [None if grayscale else models.channel_order(d.x) for d in domains]
    if any(order is None for order in orders):
        x = torch.cat([models.flatten_inputs(d.x, grayscale) for d in domains])
        return models.Inputs(x).to(device), [d.y.to(device) for d in domains]
    x = torch.cat([d.x[order] for d, order in zip(domains, orders)])
    return models.channel_inputs(x).to(device), [d.y[order].to(device) for d, order in zip(domains, orders)]


EvalCallback = Callable[[int, list[dict[str, float]]], None]


def train_block(
    domains: Domains,
    method: str,
    configs: list[ModelConfig],
    steps: int,
    eval_every: int = 100,
    on_eval: EvalCallback | None = None,
    device: torch.device | None = None,
    reduction: str = "method",
) -> list[dict[str, float]]:
    """Train ``len(configs)`` models of one method on ``domains``; return each model's final metrics.

    ``reduction`` combines the training-domain risks: "mean" (IRM code),
    "sum" (REx code) or "method" (the method's reference code; see core.methods).

    Metrics per model: ``step``, ``train_acc``/``train_nll``/``train_penalty``
    (means over training domains), ``<domain>_acc``/``_nll``/``_penalty`` for
    every domain (penalty = IRMv1 penalty of that domain), ``test_acc``/``test_nll``
    (mean over test domains), ``rex_penalty`` (the objective's penalty term) and ``min_acc`` (the lowest
    accuracy over all domains: the IRM random search's selection criterion).
    ``on_eval(step, metrics)`` is called at every eval step, the last included.
    """
    reduction = methods.resolve_reduction(method, reduction)
    device = device or default_device()
    grayscale = methods.get(method).input == "grayscale"
    channels = domains.train[0].x.shape[1]
    x_train, y_train = batch_inputs(domains.train, grayscale, device)
    sizes = [len(y) for y in y_train]
    tests = []
    for d in domains.test:
        x, (y,) = batch_inputs([d], grayscale, device)
        tests.append((d.name, x, y))

    k = len(configs)
    block = models.init_block(models.input_dim(channels, grayscale), [c.hidden for c in configs], [c.seed for c in configs])
    block = [[p.to(device).requires_grad_() for p in params] for params in block]
    flat = [p for params in block for p in params]
    m_state, v_state = [torch.zeros_like(p) for p in flat], [torch.zeros_like(p) for p in flat]
    as_vec = lambda name: torch.tensor([getattr(c, name) for c in configs], dtype=torch.float32, device=device)  # noqa: E731
    l2, pw, anneal = as_vec("l2"), as_vec("penalty_weight"), as_vec("anneal_iters")
    n_params = len(block[0])

    final: list[dict[str, float]] = []
    with memory.reuse_freed_memory():  # activations are reused, not faulted in again every step
        for step in range(steps):
            logits = models.forward(block, x_train).split(sizes, dim=1)
            per_domain = [_domain_metrics(lg, y) for lg, y in zip(logits, y_train)]
            risks = torch.stack([d["nll"] for d in per_domain], dim=-1)
            irm = torch.stack([d["penalty"] for d in per_domain], dim=-1)
            loss, penalty = methods.objective(
                method, risks, irm, models.squared_norm(block), step=step, l2=l2, penalty_weight=pw, anneal_iters=anneal,
                reduction=reduction,
            )
            grads = torch.autograd.grad(loss.sum(), flat)

            if step % eval_every == 0 or step == steps - 1:
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
                        values = _domain_metrics(models.forward(block, x), y)
                        metrics.update({f"{name}_{key}": value for key, value in values.items()})
                        test_acc.append(values["acc"])
                        test_nll.append(values["nll"])
                    metrics["test_acc"] = torch.stack(test_acc).mean(0)
                    metrics["test_nll"] = torch.stack(test_nll).mean(0)
                domain_accs = [d["acc"] for d in per_domain] + test_acc
                metrics["min_acc"] = torch.stack(domain_accs).min(0).values
                final = _rows(metrics, k)
                if on_eval is not None:
                    on_eval(step, final)

            with torch.no_grad():
                for i, config in enumerate(configs):
                    part = slice(i * n_params, (i + 1) * n_params)
                    adam_step(flat[part], grads[part], m_state[part], v_state[part], step + 1, config.lr)
    return final


def config_from_dict(config: dict) -> ModelConfig:
    """The ModelConfig fields of a flat config dict (other keys are ignored)."""
    fields = asdict(ModelConfig())
    return ModelConfig(**{name: type(default)(config[name]) for name, default in fields.items() if name in config})
