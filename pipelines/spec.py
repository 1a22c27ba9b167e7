"""What a pipeline declares, how its settings are parsed, and how sweeps and trials are named.

A pipeline is data: a name, presets (flat dicts of settings), and functions
that turn settings into either an explicit list of trial configs (a grid) or
an Optuna search, plus a report. Settings and trial configs are flat,
JSON-serialisable dicts; their canonical JSON hash names sweeps and trials, so
re-running the same command finds the work it already finished.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable


class GensweepError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


@dataclass(frozen=True)
class Search:
    """An Optuna search: define-by-run ``space(trial) -> dict``, fixed config, and budget."""

    space: Callable[[Any], dict]
    fixed: dict
    num_samples: int
    metric: str
    mode: str
    sampler: str = "random"  # or "tpe"
    seed: int = 0


@dataclass(frozen=True)
class Pipeline:
    """One experiment: presets, how settings become trials, the selection metric, the report."""

    name: str
    description: str
    presets: dict[str, dict]
    trainable: Callable  # the task's trainable, called as trainable(config, source=...)
    trials: Callable[[dict], list[dict]] | None = None  # grid pipelines
    search: Callable[[dict], Search] | None = None  # search pipelines (one Optuna study, one config per trial)
    block_search: Callable[[dict], Any] | None = None  # many studies searched in blocks (pipelines.block_search)
    block_trainable: Callable | None = None  # trainable of block configs, when it differs from ``trainable``
    report: Callable[[Any, Any, str], str] | None = None  # (trials, curves, out_dir) -> markdown
    metric: str = "test_acc"
    mode: str = "max"
    label: Callable[[dict], str] = field(default=lambda config: config.get("method", "trial"))
    needs_source: bool = True  # False: the trainable gets source=None and --data-dir is ignored

    @property
    def fields(self) -> dict:
        """Every setting with its default (the ``smoke`` preset's value) and type."""
        return self.presets["smoke"]


def parse_value(text: str, default: Any, key: str) -> Any:
    """Parse ``--set key=text`` to the type of the setting's default value."""
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, (list, tuple)):
            items = [item.strip() for item in text.split(",") if item.strip()]
            if not items:
                raise ValueError
            kind = type(default[0]) if default else str
            return [parse_value(item, kind(), key) for item in items]
        return text
    except ValueError:
        raise GensweepError(f"bad value for {key}: {text!r} is not {type(default).__name__}") from None


def resolve_settings(pipeline: Pipeline, preset: str, overrides: list[str]) -> dict:
    """The preset's settings with ``key=value`` overrides applied (typed, validated)."""
    if preset not in pipeline.presets:
        raise GensweepError(f"unknown preset {preset!r} for {pipeline.name} (choose from {', '.join(pipeline.presets)})")
    settings = dict(pipeline.presets[preset])
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GensweepError(f"bad --set {item!r}: expected key=value")
        if key not in settings:
            raise GensweepError(f"unknown setting {key!r} for {pipeline.name} (settings: {', '.join(settings)})")
        settings[key] = parse_value(text.strip(), settings[key], key)
    return settings


def canonical_hash(obj: Any) -> str:
    """SHA-1 of the canonical JSON of ``obj``."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sweep_id(pipeline: str, preset: str, settings: dict, source: str) -> str:
    """Readable, deterministic id: same pipeline, settings and data give the same sweep."""
    return f"{preset}-{canonical_hash({'pipeline': pipeline, 'settings': settings, 'source': source})[:10]}"


def trial_key(config: dict) -> str:
    """Names a trial's result files: the hash of its full config."""
    return canonical_hash(config)[:16]
