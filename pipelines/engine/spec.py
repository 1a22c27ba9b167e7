"""What a pipeline declares: typed settings, presets, its data, its stages; and how sweeps and trials are named.

A pipeline is data (see docs/adding-an-experiment.md)::

    Pipeline(name, description, settings={name: Setting(...)}, presets={"smoke": {...}, "paper": {...}},
             load_data=lambda settings, data_dir: obj_with_fingerprint,
             stages=lambda settings: [Stage(name, trainable, Grid(configs) | Search(...) | plan_fn, metric, mode), ...],
             report=lambda trials, curves, out_dir: markdown)

A stage's plan may be a function of the finished result rows of the stages
before it (``plan_fn(earlier) -> Grid | Search``, ``earlier`` = stage name ->
its rows; a follow-up stage): the runner calls it once every earlier stage is
complete, so a re-run plans the same configurations and skips those already
finished (:mod:`pipelines.engine.followup` builds the common ones).

Settings are typed by their default, checked against their bounds and
choices when parsed, and carry a one-line help that ``gensweep list`` prints.
A preset is a set of overrides of the defaults. Run-level settings
(:data:`RUN_SETTINGS`: resources, retries) belong to every pipeline and do not
change results, so they are left out of the sweep id. Trial configs are flat,
JSON-serialisable dicts; their canonical JSON hash names their result files,
so re-running the same command finds the work it already finished.
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable


class GensweepError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) says a disk, or a database on it, is full."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc) for text in ("database or disk is full", "No space left on device", "Disk quota exceeded")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(where: str) -> GensweepError:
    """The one line for a full disk: where, and that re-running the command resumes."""
    return GensweepError(f"no space left on the device of {where}: free space, then re-run the same command to resume "
                         "(every configuration recorded so far is kept)")


# ------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One setting: its default (which fixes its type), a one-line help, and what values make sense.

    Lists hold items of the type of ``item`` (default: the type of the
    default's first item). ``choices`` restricts a str setting or the items of
    a list; ``ge``/``gt``/``le`` bound a number or every item of a list. A
    list's items are distinct (an item given twice would train, record and
    count its configurations twice) unless ``repeats`` (a sequence such as
    layer widths, where an item may come again).
    """

    default: Any
    help: str
    choices: tuple = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    item: type | None = None
    opt_in: bool = False  # added after sweeps were recorded: out of the sweep id while at its default (their ids stay)
    repeats: bool = False  # a list whose items may repeat (a sequence, not a set of choices)

    @property
    def is_list(self) -> bool:
        return isinstance(self.default, (list, tuple))

    @property
    def kind(self) -> type:
        if self.is_list:
            return self.item or (type(self.default[0]) if self.default else str)
        return type(self.default)

    def parse(self, key: str, text: str) -> Any:
        """The typed value of ``--set key=text`` (checked); GensweepError naming the problem."""
        if self.is_list:
            items = [part.strip() for part in text.split(",") if part.strip()]
            if not items:
                raise GensweepError(f"bad value for {key}: {text!r} is an empty list")
            value = [parse_value(part, self.kind(), key) for part in items]
        else:
            value = parse_value(text, self.default, key)
        return self.check(key, value)

    def check(self, key: str, value: Any) -> Any:
        """``value`` if it makes sense for this setting, else GensweepError (one line)."""
        for item in value if self.is_list else [value]:
            if self.choices and item not in self.choices:
                raise GensweepError(f"bad value for {key}: {item!r} (choose from {', '.join(map(str, self.choices))})")
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if isinstance(item, float) and math.isnan(item):
                    raise GensweepError(f"bad value for {key}: nan")
                if isinstance(item, float) and math.isinf(item):  # accepted, then every trial crashed
                    raise GensweepError(f"bad value for {key}: {item!r} (must be a finite number)")
                for bound, ok, text in ((self.ge, operator.ge, ">="), (self.gt, operator.gt, ">"), (self.le, operator.le, "<=")):
                    if bound is not None and not ok(item, bound):
                        raise GensweepError(f"bad value for {key}: {item!r} (must be {text} {bound:g})")
        if self.is_list and not value:
            raise GensweepError(f"bad value for {key}: an empty list")
        if self.is_list and not self.repeats:
            seen: list = []
            for item in value:
                if item in seen:
                    raise GensweepError(f"bad value for {key}: {item!r} is listed twice (give each once)")
                seen.append(item)
        return list(value) if self.is_list else value


def parse_value(text: str, default: Any, key: str) -> Any:
    """Parse ``text`` to the type of ``default`` (bool, int, float or str)."""
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
        return text
    except ValueError:
        raise GensweepError(f"bad value for {key}: {text!r} is not {type(default).__name__}") from None


RUN_SETTINGS: dict[str, Setting] = {
    "cpus_per_trial": Setting(1.0, "CPUs Ray reserves per trial", gt=0),
    "gpus_per_trial": Setting(0.25, "GPU fraction per trial where the cluster has GPUs (0 on CPU-only clusters)", ge=0, le=8),
    "max_failures": Setting(2, "retries of a trial whose worker died", ge=0),
}


# ------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Grid:
    """An explicit list of trial configs; a config with a ``block`` list trains each entry (merged over the rest)."""

    configs: list[dict]


@dataclass(frozen=True)
class Search:
    """Optuna studies, one per entry of ``studies`` (its fixed config), each with ``budget`` configurations.

    ``space(trial)`` suggests on an Optuna trial (define-by-run) and returns
    derived values. ``block_size`` > 1 trains that many configurations of a
    study per Tune trial. With the random sampler, studies that agree on the
    ``paired_by`` keys train the same configurations (sample i of every such
    study has the same hyperparameters and seed i): methods compared on the
    same draws. TPE studies sample on their own.

    ``draws(fixed)`` (optional, instead of ``space`` and the sampler) gives a
    study's ``budget`` configurations explicitly, for searches whose draws are
    defined elsewhere (DomainBed's registry): a list of dicts with ``params``
    (recorded as the Optuna trial's parameters), ``distributions`` (their
    Optuna distributions) and ``derived`` (further config values; a ``seed``
    there replaces the default seed = sample index). They are recorded and
    resumed as paired draws are; consecutive draws share a Tune trial.
    """

    studies: list[dict]
    space: Callable[[Any], dict] | None
    budget: int
    study_name: Callable[[dict], str] = lambda fixed: ""
    block_size: int = 1
    sampler: str = "random"  # or "tpe"
    seed: int = 0
    paired_by: tuple[str, ...] = ()
    draws: Callable[[dict], list[dict]] | None = None


Earlier = dict  # stage name -> pandas DataFrame of that stage's finished rows, sorted by trial_key
PlanFn = Callable[[Earlier], "Grid | Search"]


@dataclass(frozen=True)
class Stage:
    """One Tuner run of a sweep: a trainable ``(config, data) -> tune.report(Report)``, its plan, its metric.

    ``plan`` is a Grid or a Search, or a function of the earlier stages'
    finished rows returning one (:data:`PlanFn`; it must be deterministic in
    those rows). ``scheduler`` (optional) makes a Tune trial scheduler (e.g.
    ASHA) that may stop trials early; a stopped configuration is recorded with
    its last metrics and ``stopped_early`` set (and told to Optuna with that value).
    """

    name: str
    trainable: Callable
    plan: Grid | Search | PlanFn
    metric: str
    mode: str = "max"
    scheduler: Callable[[], Any] | None = None
    label: Callable[[dict], str] = lambda config: str(config.get("method", "trial"))

    @property
    def followup(self) -> bool:
        """True when the plan is built from the earlier stages' rows (a follow-up stage)."""
        return not isinstance(self.plan, (Grid, Search))


@dataclass(frozen=True)
class NoData:
    """The data of pipelines that generate their own (SEMs, RL environments): nothing to ship, a fixed fingerprint."""

    name: str = "generated"

    @property
    def fingerprint(self) -> str:
        return self.name


@dataclass(frozen=True)
class Pipeline:
    """One experiment: typed settings, presets, its data loader, its stages, its report."""

    name: str
    description: str
    settings: dict[str, Setting]
    presets: dict[str, dict]  # overrides of the settings' defaults, per preset
    load_data: Callable[[dict, str | None], Any]  # (settings, --data-dir) -> object with .fingerprint
    stages: Callable[[dict], list[Stage]]
    report: Callable[[Any, Any, str], str]  # (trials, curves, out_dir) -> markdown
    check: Callable[[dict], None] | None = None  # cross-setting checks, raising GensweepError
    preset_help: dict[str, str] = field(default_factory=dict)  # a line per preset (what it is, how it deviates)
    run_defaults: dict = field(default_factory=dict)  # this pipeline's defaults of RUN_SETTINGS
    requires: tuple[str, ...] = ()  # modules its trials import beyond the base install (an optional extra's)
    extra: str = ""  # the optional dependency group of pyproject.toml that installs them
    needs_data_dir: tuple[str, ...] = ()  # presets named for real data files: refused without --data-dir

    def missing(self) -> list[str]:
        """The modules of ``requires`` this Python cannot import (found without importing them)."""
        import importlib.util

        def found(name: str) -> bool:
            try:
                return importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                return False

        return [name for name in self.requires if not found(name)]

    def check_installed(self) -> None:
        """GensweepError (one line, how to install) when a required module is missing."""
        missing = self.missing()
        if missing:
            raise GensweepError(
                f"{self.name} needs the '{self.extra}' extra ({', '.join(missing)} not installed): "
                f"pip install 'gensweep[{self.extra}]'"
            )

    def all_settings(self) -> dict[str, Setting]:
        """The pipeline's settings and the run-level ones (with this pipeline's defaults)."""
        run = {k: Setting(**{**s.__dict__, "default": self.run_defaults.get(k, s.default)}) for k, s in RUN_SETTINGS.items()}
        return {**self.settings, **run}


def resolve_settings(pipeline: Pipeline, preset: str, overrides: list[str]) -> dict:
    """The preset's settings with ``key=value`` overrides applied, typed and checked (GensweepError otherwise)."""
    if preset not in pipeline.presets:
        raise GensweepError(f"unknown preset {preset!r} for {pipeline.name} (choose from {', '.join(pipeline.presets)})")
    declared = pipeline.all_settings()
    settings = {key: s.default for key, s in declared.items()}
    settings.update(pipeline.presets[preset])
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GensweepError(f"bad --set {item!r}: expected key=value")
        if key not in declared:
            raise GensweepError(f"unknown setting {key!r} for {pipeline.name} (settings: {', '.join(declared)})")
        settings[key] = declared[key].parse(key, text.strip())
    for key, value in settings.items():
        declared[key].check(key, value)
    if pipeline.check is not None:
        pipeline.check(settings)
    return settings


def result_settings(settings: dict) -> dict:
    """The settings that can change results (the run-level ones left out)."""
    return {k: v for k, v in settings.items() if k not in RUN_SETTINGS}


# ------------------------------------------------------------------------------------------- names


def canonical_hash(obj: Any) -> str:
    """SHA-1 of the canonical JSON of ``obj``."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sweep_id(pipeline: str, preset: str, settings: dict, data: str, declared: dict[str, Setting] | None = None) -> str:
    """Readable, deterministic id: same pipeline, result settings and data give the same sweep.

    ``declared`` (the pipeline's settings): an ``opt_in`` setting at its default is left out, so a setting added
    to a pipeline later does not rename the sweeps recorded before it.
    """
    declared = declared or {}
    named = {k: v for k, v in result_settings(settings).items()
             if not (k in declared and declared[k].opt_in and v == declared[k].default)}
    return f"{preset}-{canonical_hash({'pipeline': pipeline, 'settings': named, 'data': data})[:10]}"


def trial_key(config: dict) -> str:
    """Names a configuration's result files: the hash of its full config."""
    return canonical_hash(config)[:16]

