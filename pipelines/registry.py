"""The pipelines the CLI knows, by name."""
from __future__ import annotations

from pipelines.engine.spec import GensweepError, Pipeline


def pipelines() -> dict[str, Pipeline]:
    """Every pipeline, keyed by its CLI name."""
    from pipelines.rex import cmnist_search
    from pipelines.rex import cmnist_table
    from pipelines.rex import rex_vs_irm
    from pipelines.rex import rl_spurious
    from pipelines.rex import toy_sem
    from pipelines.memorization import capacity as memorization_capacity
    from pipelines.memorization import csr as memorization_csr
    from pipelines.memorization import easy as memorization_easy
    from pipelines.memorization import regularizers as memorization_regularizers
    from pipelines.memorization import sensitivity as memorization_sensitivity

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
