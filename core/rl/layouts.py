"""Observation layouts of the RL tasks and the checks on ``k`` and ``hide``, without a physics simulation.

Pure Python (no gymnasium, dm_control or numpy), so that the pipeline checks
its settings before anything is installed or started. :data:`LAYOUTS` is
dm_control 1.0.50's ``observation_spec()`` per task, in its own order (the
order dmc2gym flattens it in); ``tests/test_rl_core.py`` checks it against
dm_control. The envs (:mod:`core.rl.envs`) use the same functions on the
layout the task reports.
"""
from __future__ import annotations

from typing import Sequence

Layout = Sequence[tuple[str, int]]

LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "cartpole-swingup": (("position", 3), ("velocity", 2)),
    "finger-spin": (("position", 4), ("velocity", 3), ("touch", 2)),
    "walker-walk": (("orientations", 14), ("height", 1), ("velocity", 9)),
    "walker-stand": (("orientations", 14), ("height", 1), ("velocity", 9)),
    "reacher-easy": (("position", 2), ("to_target", 2), ("velocity", 2)),
    "cheetah-run": (("position", 8), ("velocity", 9)),
    "point-reach": (("position", 1), ("target", 1)),  # the toy task of core.rl.envs
}


def entry_names(layout: Layout) -> list[str]:
    """Names of the flattened state entries: ``key[i]`` for each key of the layout, in order."""
    return [f"{key}[{i}]" for key, size in layout for i in range(size)]


def kept_entries(layout: Layout, k: int, hide: Sequence[str]) -> list[int]:
    """Indices of the state entries left after ``hide``; ValueError for a bad ``k``, an unknown name or nothing left.

    ``hide`` names whole observation keys (``"velocity"``) or single entries
    (``"velocity[1]"``); ``k`` (the copied last entries) must be in 0..state size.
    """
    names = entry_names(layout)
    n = len(names)
    if not 0 <= k <= n:
        raise ValueError(f"k must be in 0..{n} (the state has {n} entries: {', '.join(key for key, _ in layout)}), got {k}")
    keys = {key: [i for i, name in enumerate(names) if name.startswith(key + "[")] for key, _ in layout}
    hidden: set[int] = set()
    for item in hide:
        if item in keys:
            hidden.update(keys[item])
        elif item in names:
            hidden.add(names.index(item))
        else:
            raise ValueError(f"cannot hide {item!r}: choose observation keys {list(keys)} or entries like {names[-1]!r}")
    kept = [i for i in range(n) if i not in hidden]
    if not kept:
        raise ValueError(f"hide={','.join(hide)} hides every state entry ({', '.join(keys)}): nothing real is left to observe")
    return kept


def parse_hide(text: str) -> tuple[str, ...]:
    """The ``hide`` setting (comma-separated names; empty: none) as a tuple."""
    return tuple(h.strip() for h in str(text).split(",") if h.strip())
