"""The pipelines the CLI knows, by name."""
from __future__ import annotations

from pipelines.spec import GensweepError, Pipeline


def pipelines() -> dict[str, Pipeline]:
    """Every pipeline, keyed by its CLI name."""
    from pipelines import cmnist_search, cmnist_table, rex_vs_irm, rl_spurious, toy_sem
    from pipelines import memorization_capacity, memorization_csr, memorization_easy, memorization_regularizers, memorization_sensitivity

    known = (cmnist_table.PIPELINE, cmnist_search.PIPELINE, rex_vs_irm.PIPELINE, toy_sem.PIPELINE, rl_spurious.PIPELINE,
             memorization_regularizers.PIPELINE, memorization_csr.PIPELINE, memorization_easy.PIPELINE,
             memorization_sensitivity.PIPELINE, memorization_capacity.PIPELINE)
    return {p.name: p for p in known}


def get(name: str) -> Pipeline:
    """The pipeline called ``name``, or a GensweepError listing the known ones."""
    known = pipelines()
    if name not in known:
        raise GensweepError(f"unknown pipeline {name!r} (choose from {', '.join(known)})")
    return known[name]
