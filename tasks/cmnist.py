"""Trainable for Colored MNIST-style experiments: one flat config (or a block of them) -> Reports.

Config keys (all JSON scalars): ``method`` (a core.methods name),
``risk_reduction`` (method, mean or sum; see core.methods), ``hidden``,
``l2``, ``lr``, ``anneal_iters``, ``penalty_weight``, ``seed`` (model init),
``steps``, ``eval_every``, ``data_seed`` (domain construction), ``data`` (the
image source's fingerprint) and ``variant`` (``standard``, or the
covariate-shift variants ``class``, ``digit``, ``color``, which add
``shift_p``). A config with a ``block`` list trains each entry's own keys
(hidden, l2, lr, anneal_iters, penalty_weight, seed, ...) merged over the
shared ones, as one block of models on one set of domains.

The image source arrives through the object store (``tune.with_parameters``);
domains are built once per worker process and reused by every trial that
asks for the same (source, variant, data seed, p).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from core.cmnist import Domains, build_cmnist
from core.cmnist_shift import build_shifted_cmnist
from core.data import ImageSource
from core.train import config_from_dict, train_block
from tasks.report import Report, tune_reporter, units

_DOMAIN_CACHE: OrderedDict[tuple, Domains] = OrderedDict()
_CACHE_SIZE = 4


def _shifted(source: ImageSource, variant: str, config: dict) -> Domains:
    """Covariate-shift variant domains at ``config["shift_p"]`` (see core.cmnist_shift)."""
    return build_shifted_cmnist(source, variant, float(config["shift_p"]), int(config["data_seed"]))


DOMAIN_BUILDERS: dict[str, Callable[[ImageSource, dict], Domains]] = {
    "standard": lambda source, config: build_cmnist(source, int(config["data_seed"])),
    "class": lambda source, config: _shifted(source, "class", config),
    "digit": lambda source, config: _shifted(source, "digit", config),
    "color": lambda source, config: _shifted(source, "color", config),
}


def domains_for(source: ImageSource, config: dict) -> Domains:
    """The domains a config asks for, from this process's cache when already built."""
    variant = config.get("variant", "standard")
    key = (config.get("data") or source.fingerprint, variant, int(config["data_seed"]), config.get("shift_p"))
    if key in _DOMAIN_CACHE:
        _DOMAIN_CACHE.move_to_end(key)
        return _DOMAIN_CACHE[key]
    domains = DOMAIN_BUILDERS[variant](source, config)
    _DOMAIN_CACHE[key] = domains
    while len(_DOMAIN_CACHE) > _CACHE_SIZE:
        _DOMAIN_CACHE.popitem(last=False)
    return domains


def run_cmnist(config: dict, source: ImageSource, report: Callable[[Report], None]) -> list[dict]:
    """Train the configuration (or the block of them) of ``config``; ``report`` gets a Report at every eval step.

    Returns each configuration's final metrics, in block order.
    """
    steps = int(config["steps"])
    configs = [config_from_dict(unit) for unit in units(config)]

    def on_eval(step: int, rows: list[dict]) -> None:
        report(Report(step=step, final=step == steps - 1, models=rows))

    return train_block(
        domains_for(source, config), config["method"], configs, steps=steps,
        eval_every=int(config.get("eval_every", 100)), on_eval=on_eval,
        reduction=str(config.get("risk_reduction", "method")),
    )


def cmnist_trainable(config: dict, data: ImageSource) -> None:
    """Ray Tune function trainable (use with ``tune.with_parameters(cmnist_trainable, data=source)``)."""
    run_cmnist(config, data, tune_reporter())
