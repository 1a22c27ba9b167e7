"""Plans of follow-up stages, built from earlier stages' results: pick the best rows, re-train them with fresh seeds.

A follow-up stage's plan is a function of ``earlier`` (stage name -> that
stage's finished rows, sorted by trial key; see :class:`pipelines.engine.spec.Stage`).
The runner calls it only once every earlier stage is complete and calls it
again, on the same rows, when a sweep is resumed: these functions are
deterministic in the rows (ties are broken by trial key), so a resumed sweep
plans exactly the configurations it started and skips those it finished.

Configurations are rebuilt from each row's ``config_json`` (the exact config
the row was trained with, types included), not from its Parquet columns,
whose types the union of schemas across stages may have widened.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

from pipelines.engine.spec import Earlier, Grid

# What a search adds to a configuration, and what the runner adds to every one: a re-trained
# configuration gets its own (the runner adds data and stage again).
SEARCH_KEYS = ("study", "sample", "optuna_trial", "stage", "data")


def row_config(row) -> dict:
    """The config a result row was trained with (its ``config_json``)."""
    return json.loads(row["config_json"])


@dataclass(frozen=True)
class Ranked:
    """A result row, its group's values (of ``group_by``) and its rank in the group (0: the best)."""

    group: tuple
    rank: int
    row: dict


def best_rows(frame, metric: str, mode: str = "max", top: int = 1, group_by: tuple[str, ...] = ()) -> list[Ranked]:
    """The ``top`` best rows of each group of ``frame`` by ``metric``, groups in sorted order.

    Rows whose metric is missing or NaN rank last; equal values rank by trial key.
    """
    if frame is None or len(frame) == 0:
        return []
    out = []
    groups = frame.groupby(list(group_by), sort=True) if group_by else [((), frame)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        records = group.to_dict("records")

        def order(record: dict):
            value = record.get(metric)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            score = 0.0 if missing else (-float(value) if mode == "max" else float(value))
            return (missing, score, str(record["trial_key"]))

        out += [Ranked(values, rank, record) for rank, record in enumerate(sorted(records, key=order)[:top])]
    return out


def retrain_best(
    source: str, metric: str, mode: str = "max", top: int = 1, seeds: int = 3, group_by: tuple[str, ...] = ("study",),
    seed_keys: tuple[str, ...] = ("seed",), drop: tuple[str, ...] = SEARCH_KEYS,
) -> Callable[[Earlier], Grid]:
    """A plan: the ``top`` best configurations of stage ``source`` (per ``group_by`` group), each trained with ``seeds`` seeds.

    Configuration r of seed s is the source row's config without ``drop``,
    with every key of ``seed_keys`` set to s, plus ``retrain_of`` (the source
    row's trial key), ``retrain_rank`` (r: 0 is the best) and the source's
    ``metric`` value as ``retrain_source_<metric>``: the report can set the
    re-trained mean beside the value the search selected on.
    """

    def plan(earlier: Earlier) -> Grid:
        configs = []
        for best in best_rows(earlier.get(source), metric, mode, top, group_by):
            row = best.row
            base = {k: v for k, v in row_config(row).items() if k not in drop}
            extra = {"retrain_of": row["trial_key"], "retrain_rank": best.rank, f"retrain_source_{metric}": row.get(metric)}
            configs += [{**base, **{key: s for key in seed_keys}, **extra} for s in range(seeds)]
        return Grid(configs)

    return plan
