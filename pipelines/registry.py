"""The pipelines the CLI knows, by study: each is the ``PIPELINE`` of ``pipelines/<study>/<module>.py``."""
from __future__ import annotations

import importlib

from pipelines.engine.spec import GensweepError, Pipeline

STUDIES: dict[str, tuple[str, ...]] = {
    "rex": ("cmnist_table", "cmnist_search", "rex_vs_irm", "toy_sem", "rl_spurious", "domainbed"),  # thesis chapter 5
    "memorization": ("regularizers", "csr", "easy", "sensitivity", "capacity"),  # thesis chapter 3
    "naf": ("toy", "sinewave", "tabular", "vae"),  # Neural Autoregressive Flows (the thesis's NAF article; motivated in §1.4.2)
    "bhn": ("toy", "classify", "active", "ood"),  # Bayesian hypernetworks (the thesis's chapter 6)
}


def pipelines() -> dict[str, Pipeline]:
    """Every pipeline, keyed by its CLI name, in the order of :data:`STUDIES`."""
    known = [importlib.import_module(f"pipelines.{study}.{module}").PIPELINE for study, modules in STUDIES.items() for module in modules]
    return {p.name: p for p in known}


def get(name: str) -> Pipeline:
    """The pipeline called ``name``, or a GensweepError listing the known ones."""
    known = pipelines()
    if name not in known:
        raise GensweepError(f"unknown pipeline {name!r} (choose from {', '.join(known)})")
    return known[name]
