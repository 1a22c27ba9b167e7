"""The libraries whose internals the engine reaches into, the versions it is tested with, and the start-up check.

The engine writes straight into Optuna's and MLflow's SQL tables (one transaction per
write batch, instead of one round trip per row) and reads Tune's trial objects; a
release that changes those internals can break a sweep halfway or, worse, record it
wrongly. ``check_versions`` runs before a sweep starts (``gensweep run`` and
``gensweep resume``) and stops it with one line when an installed version lies outside
its tested range. pyproject.toml declares the same ranges (tests/test_versions.py keeps
them equal); the check also catches an environment that pip did not resolve (an
upgrade after install, a cluster image).
"""
from __future__ import annotations

import os
import re
from importlib import metadata

from pipelines.engine.spec import GensweepError

# name -> (lowest, first untested): tested with lowest <= version < first untested.
TESTED: dict[str, tuple[str, str]] = {
    # optuna.storages._rdb (models, _create_scoped_session), Study._storage / _study_id, FrozenTrial._trial_id:
    # add_trials and prepare_study (pipelines/engine/studies.py). Its SQL schema changes with major releases.
    "optuna": ("3.6", "6"),
    # mlflow.store.tracking (SqlAlchemyStore, dbmodels), MlflowClient._tracking_client.store: MlflowSweep._insert (tracking.py).
    # Its SQL schema migrations land in minor releases, so the bound is the next minor.
    "mlflow": ("3.0", "3.18"),
    # ray.init(_node_ip_address=...), Tune's Trial.last_result / experiment_tag in callbacks: runtime.py, sink.py.
    "ray": ("2.41", "3"),
}
# Set to 1 to run with an untested version anyway (to try a new release).
SKIP_ENV = "GENSWEEP_UNTESTED_VERSIONS"


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``"3.18.0rc1"`` -> ``(3, 18, 0)``, ``"2.60.0+cpu"`` -> ``(2, 60, 0)``."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def _padded(version: tuple[int, ...], width: int) -> tuple[int, ...]:
    return version + (0,) * (width - len(version))


def in_range(version: str, lowest: str, untested: str) -> bool:
    """Whether ``lowest <= version < untested`` (release numbers only: a pre-release of ``untested`` is outside)."""
    v, lo, hi = release(version), release(lowest), release(untested)
    width = max(len(v), len(lo), len(hi))
    return _padded(lo, width) <= _padded(v, width) < _padded(hi, width)


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or None when it is not installed (the library's own import fails later)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> None:
    """GensweepError (one line: library, installed and tested versions) for the first library outside its tested range."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    for name, (lowest, untested) in TESTED.items():
        version = installed_version(name)
        if version is not None and not in_range(version, lowest, untested):
            raise GensweepError(
                f"{name} {version} is installed, gensweep is tested with {name}>={lowest},<{untested}: "
                f"pip install '{name}>={lowest},<{untested}' (or set {SKIP_ENV}=1 to run untested)"
            )
