"""SQLite databases several sweeps may open at once: checked before a sweep starts, created under a file lock.

Two sweeps started together into a new results directory would both create
(and migrate) ``mlflow.db`` and ``optuna.db``; the second then dies halfway
through the schema. :func:`sqlite_lock` serialises that first opening with an
exclusive ``flock`` on ``<database>.lock`` beside the file; :func:`check_sqlite`
turns a missing directory or a read-only file into one line naming the file.
Other URLs (PostgreSQL, MySQL, an MLflow server) pass through: their servers
create schemas in transactions.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from pipelines.engine.spec import GensweepError


def sqlite_path(url: str) -> str | None:
    """The database file of a ``sqlite:///`` URL (absolute), or None for any other URL or an in-memory database."""
    if not url.startswith("sqlite:"):
        return None
    try:
        from sqlalchemy.engine import make_url

        database = make_url(url).database
    except Exception as exc:  # SQLAlchemy's ArgumentError, or a malformed URL
        raise GensweepError(f"bad SQLite URL {url}: {exc}") from None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def check_sqlite(path: str, what: str) -> None:
    """GensweepError (one line naming ``path``) when the database cannot be created or written there."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise GensweepError(f"{what} {path}: its directory {folder} does not exist (create it, or choose another URL)")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise GensweepError(f"{what} {path} is read-only: SQLite must write it (make it writable, or choose another URL)")
    if not os.access(folder, os.W_OK):
        raise GensweepError(f"{what} {path} is in a read-only directory: SQLite must write its journal beside it "
                            f"(make {folder} writable, or choose another URL)")


@contextmanager
def sqlite_lock(url: str, what: str) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite database's ``.lock`` file (checked first); other URLs: no lock."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    import fcntl

    check_sqlite(path, what)
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GensweepError(f"{what} {path}: cannot create its lock file {path}.lock: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
