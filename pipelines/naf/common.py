"""Shared pieces of the naf pipelines: flow-shape settings, the per-seed block configs, table cells."""
from __future__ import annotations

import math

import numpy as np

from core.flows.spec import TRANSFORMERS
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Setting

SHAPE_KEYS = ("transformer", "flows", "hidden", "hidden_layers", "ds_dim", "ds_layers")
DISPLAY = {"maf": "affine (MAF, exp-scale)", "affine-gated": "affine (NAF code, gated)", "dsf": "DSF", "ddsf": "DDSF",
           "zuko-maf": "MAF (zuko, library anchor)"}


def transformers_setting(default: list[str], help_text: str = "transformers (affine-gated = NAF code's IAF, maf = MAF's)") -> Setting:
    return Setting(default, help_text, choices=TRANSFORMERS)


def block_configs(shared: list[dict], seeds: int, block_size: int) -> list[dict]:
    """Every shared config as blocks of up to ``block_size`` seeds (``block: [{"seed": s}, ...]``)."""
    return [dict(c, block=[{"seed": s} for s in range(start, min(seeds, start + block_size))])
            for c in shared for start in range(0, seeds, block_size)]


def check_hidden(hidden: int, dim: int, where: str) -> None:
    """The MADE needs at least as many hidden units as data dimensions (DSF's channels per feature = 3·(hidden // dim))."""
    if hidden < dim:
        raise GensweepError(f"bad value for hidden: {hidden} (must be >= the data dimension {dim} of {where})")


def cell(values, digits: int = 3) -> str:
    """mean ± s.e. over the finite values (n shown when some are missing)."""
    array = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    if len(array) == 0:
        return "–"
    return reports.pm(*reports.mean_sem(array), digits) + (f" (n={len(array)})" if len(array) != len(values) else "")


def shape_label(row) -> str:
    """transformer (flows × hidden)."""
    return f"{DISPLAY.get(row['transformer'], row['transformer'])}, {int(row['flows'])} × {int(row['hidden'])}"
