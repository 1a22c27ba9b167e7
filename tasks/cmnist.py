"""Trainable for Colored MNIST-style experiments: one flat config -> metrics via ``tune.report``.

Config keys (all JSON scalars): ``method``, ``hidden``, ``l2``, ``lr``,
``anneal_iters``, ``penalty_weight``, ``seed`` (model init), ``steps``,
``eval_every``, ``data_seed`` (domain construction), ``source`` (the source's
fingerprint) and ``variant`` (``standard``, or the covariate-shift variants ``class``, ``digit``,
``color``, which add ``shift_p``). The image source arrives through the object store
(``tune.with_parameters``); domains are built once per worker process and
reused by every trial that asks for the same (source, variant, data seed).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from core.cmnist import Domains, build_cmnist
from core.cmnist_shift import build_shifted_cmnist
from core.data import ImageSource
from core.train import config_from_dict, train_block

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
    key = (config["source"], variant, int(config["data_seed"]), config.get("shift_p"))
    if key in _DOMAIN_CACHE:
        _DOMAIN_CACHE.move_to_end(key)
        return _DOMAIN_CACHE[key]
    domains = DOMAIN_BUILDERS[variant](source, config)
    _DOMAIN_CACHE[key] = domains
    while len(_DOMAIN_CACHE) > _CACHE_SIZE:
        _DOMAIN_CACHE.popitem(last=False)
    return domains


def run_cmnist(config: dict, source: ImageSource, report: Callable[[dict], None]) -> dict:
    """Train one configuration; ``report`` receives the metrics of every eval step (last one: ``done``)."""
    steps = int(config["steps"])

    def on_eval(step: int, rows: list[dict]) -> None:
        report({**rows[0], "done": step == steps - 1})

    return train_block(
        domains_for(source, config),
        config["method"],
        [config_from_dict(config)],
        steps=steps,
        eval_every=int(config.get("eval_every", 100)),
        on_eval=on_eval,
    )[0]


def run_cmnist_block(config: dict, source: ImageSource, report: Callable[[dict], None]) -> list[dict]:
    """Train the K configurations of ``config["block"]`` together (one set of domains, one method).

    Each block entry holds one configuration's own keys (hidden, l2, lr,
    anneal_iters, penalty_weight, seed, ...); the other keys of ``config`` are
    shared. ``report`` receives ``{"step", "done", "models": [metrics per configuration]}``.
    """
    steps = int(config["steps"])
    shared = {k: v for k, v in config.items() if k != "block"}
    configs = [config_from_dict({**shared, **entry}) for entry in config["block"]]

    def on_eval(step: int, rows: list[dict]) -> None:
        report({"step": step, "done": step == steps - 1, "models": rows})

    return train_block(
        domains_for(source, config), config["method"], configs, steps=steps,
        eval_every=int(config.get("eval_every", 100)), on_eval=on_eval,
    )


def _tune_report() -> Callable[[dict], None]:
    """``tune.report`` that adds this trial's Ray node id (looked up once) to every report, as ``node_id``."""
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()
    return lambda metrics: tune.report({**metrics, "node_id": node_id})


def cmnist_block_trainable(config: dict, source: ImageSource) -> None:
    """Ray Tune trainable for a block of configurations (see :func:`run_cmnist_block`)."""
    run_cmnist_block(config, source, _tune_report())


def cmnist_trainable(config: dict, source: ImageSource) -> None:
    """Ray Tune function trainable (use with ``tune.with_parameters(cmnist_trainable, source=...)``)."""
    run_cmnist(config, source, _tune_report())
