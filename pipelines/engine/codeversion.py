"""The code a sweep ran with: gensweep's version and, in a git checkout, the last commit that changed the code.

Recorded in each sweep's record and on every result row (``code_version``)
and MLflow run; a sweep resumed with another code version is refused unless
``--allow-code-change`` (its rows would mix two codes). The commit is the
last one touching :data:`CODE_PATHS` (what trains, scores and records): a
commit of tests or documents leaves recorded sweeps resumable. Uncommitted
changes are noted (``dirty``) but not compared: a checkout being edited is
not a different release.
"""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

CODE_PATHS = ("core", "tasks", "pipelines")
ALLOW_ENV = "GENSWEEP_ALLOW_CODE_CHANGE"  # =1: resume across code versions, as --allow-code-change does
ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """``{"gensweep": version, "commit": sha or None, "dirty": bool}`` of the code this process runs (read once)."""
    try:
        version = metadata.version("gensweep")
    except metadata.PackageNotFoundError:
        version = "unknown"
    commit = None
    if (ROOT / ".git").exists():
        commit = _git("log", "-1", "--format=%H", "--", *CODE_PATHS) or None
    dirty = bool(commit and _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS))
    return {"gensweep": version, "commit": commit, "dirty": dirty}


def version_text(code: dict | None = None) -> str:
    """One string naming a code version: ``0.1.0`` or ``0.1.0+g1a2b3c4d5e6f`` (the commit), as rows and runs record it."""
    code = code_version() if code is None else code
    commit = code.get("commit")
    return f"{code.get('gensweep', 'unknown')}+g{commit[:12]}" if commit else str(code.get("gensweep", "unknown"))
