"""Parquet results: one file per finished trial, written once, read back with unified schemas.

Layout under the results root (a local path or a pyarrow filesystem URI such
as ``s3://bucket/prefix``)::

    parquet/trials/pipeline=<name>/sweep=<id>/<trial_key>.parquet   one row: config + final metrics
    parquet/curves/pipeline=<name>/sweep=<id>/<trial_key>.parquet   one row per eval step

Every trial row has the core columns of :data:`CORE_COLUMNS`, then the
trial's config and final metrics as plain columns. Files are written to a
temporary name and renamed, so a crash never leaves half a row; reads unify
the schemas of all files (columns that only later files have are kept).
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.spec import GensweepError

CORE_COLUMNS = {
    "trial_key": pa.string(),
    "stage": pa.string(),
    "label": pa.string(),
    "finished_at": pa.timestamp("us", tz="UTC"),
    "wall_s": pa.float64(),
    "hostname": pa.string(),
    "node_ip": pa.string(),
    "config_json": pa.string(),
}
PARTITIONING = ds.partitioning(pa.schema([("pipeline", pa.string()), ("sweep", pa.string())]), flavor="hive")
TABLES = ("trials", "curves")


def _column_value(value):
    """Scalars stay as they are (ints as int64, floats as float64); anything else becomes JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class ResultStore:
    """The Parquet side of a results directory."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, results: str) -> "ResultStore":
        """A store for a local directory or a filesystem URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``)."""
        if "://" in results:
            try:
                fs, root = pafs.FileSystem.from_uri(results)
            except (pa.ArrowInvalid, OSError) as exc:
                raise GensweepError(f"cannot open results location {results}: {exc}") from None
            return cls(fs, root.rstrip("/"))
        return cls(pafs.LocalFileSystem(), os.path.abspath(results))

    def _dir(self, table: str, pipeline: str | None = None, sweep: str | None = None) -> str:
        path = f"{self.root}/parquet/{table}"
        if pipeline is not None:
            path += f"/pipeline={pipeline}"
            if sweep is not None:
                path += f"/sweep={sweep}"
        return path

    def check_writable(self) -> None:
        """Raise GensweepError unless files can be created under the root."""
        probe = f"{self.root}/.write-probe-{uuid.uuid4().hex}"
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"ok")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as exc:
            raise GensweepError(f"results directory {self.root} is not writable: {exc}") from None

    def _write(self, path: str, table: pa.Table) -> None:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, path)

    def write_trial(self, pipeline: str, sweep: str, key: str, row: dict, curve: list[dict]) -> None:
        """Write one finished trial: its row (core columns + config + metrics) and its curve."""
        if curve:
            rows = [{"trial_key": key, **{k: _column_value(v) for k, v in r.items()}} for r in curve]
            self._write(f"{self._dir('curves', pipeline, sweep)}/{key}.parquet", pa.Table.from_pylist(rows))
        core = {name: row.get(name) for name in CORE_COLUMNS}
        core["trial_key"] = key
        core["finished_at"] = core["finished_at"] or datetime.now(timezone.utc)
        extra = {k: _column_value(v) for k, v in row.items() if k not in CORE_COLUMNS}
        core_schema = pa.schema(list(CORE_COLUMNS.items()))
        table = pa.Table.from_pylist([core], schema=core_schema)
        for name, value in extra.items():
            table = table.append_column(name, pa.array([value]))
        self._write(f"{self._dir('trials', pipeline, sweep)}/{key}.parquet", table)

    def _files(self, table: str, pipeline: str | None, sweep: str | None) -> list[str]:
        selector = pafs.FileSelector(self._dir(table, pipeline, sweep), recursive=True, allow_not_found=True)
        return sorted(info.path for info in self.fs.get_file_info(selector) if info.path.endswith(".parquet"))

    def finished_keys(self, pipeline: str, sweep: str) -> set[str]:
        """Trial keys that already have a result row in this sweep."""
        return {path.rsplit("/", 1)[1][: -len(".parquet")] for path in self._files("trials", pipeline, sweep)}

    def read(self, table: str = "trials", pipeline: str | None = None, sweep: str | None = None) -> pd.DataFrame:
        """All rows of ``table`` (optionally one pipeline / sweep) with ``pipeline`` and ``sweep`` columns."""
        files = self._files(table, pipeline, sweep)
        if not files:
            return pd.DataFrame()
        base = self._dir(table)
        dataset = ds.dataset(files, filesystem=self.fs, format="parquet", partitioning=PARTITIONING, partition_base_dir=base)
        schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
        unified = pa.unify_schemas(schemas + [PARTITIONING.schema], promote_options="permissive")
        dataset = ds.dataset(
            files, schema=unified, filesystem=self.fs, format="parquet", partitioning=PARTITIONING, partition_base_dir=base
        )
        return dataset.to_table().to_pandas()

    def sweeps(self, pipeline: str) -> list[str]:
        """Sweep ids of ``pipeline`` that have results, most recently finished last."""
        frame = self.read("trials", pipeline)
        if frame.empty:
            return []
        return list(frame.groupby("sweep")["finished_at"].max().sort_values().index)
