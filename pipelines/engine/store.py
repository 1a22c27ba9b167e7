"""Parquet results: one file per finished trial, written once, read back with unified schemas.

Layout under the results root (a local path or a pyarrow filesystem URI such
as ``s3://bucket/prefix``)::

    parquet/trials/pipeline=<name>/sweep=<id>/<trial_key>.parquet   one row: config + final metrics
    parquet/curves/pipeline=<name>/sweep=<id>/<trial_key>.parquet   one row per eval step
    parquet/<table>/pipeline=<name>/sweep=<id>/part-<id>.parquet     many rows: a write batch or a compacted file

Every trial row has the core columns of :data:`CORE_COLUMNS` (among them
``code_version``, the code that wrote it), then the trial's config and final
metrics as plain columns. Files are written to a
temporary name and renamed, so a crash never leaves half a row; reads unify
the schemas of all files (columns that only later files have are kept).

A write batch of ``PART_MIN_ROWS`` or more configurations
(:meth:`ResultStore.write_trials`) is one ``part-<id>.parquet`` per table,
the curves first: a curves part whose trials part is missing (a crash came
between them) is ignored by readers and its configurations run again.

Compaction (:meth:`ResultStore.compact`, ``gensweep compact``) merges a
sweep's files into one ``part-<id>.parquet`` per table under a journal
(``_compaction-<id>.json`` in the sweep's trials folder) listing what it
replaces: outputs are written, then the inputs deleted, then the journal.
Readers skip the inputs of a journal whose outputs all exist (and the
outputs of one whose outputs do not all exist yet), so a compaction killed
at any point loses and duplicates no row; the next compaction or sweep
finishes or undoes it (:meth:`ResultStore.recover`).
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

from pipelines.engine.codeversion import version_text
from pipelines.engine.spec import GensweepError, disk_full_error, is_disk_full

CORE_COLUMNS = {
    "trial_key": pa.string(),
    "stage": pa.string(),
    "label": pa.string(),
    "finished_at": pa.timestamp("us", tz="UTC"),
    "wall_s": pa.float64(),
    "hostname": pa.string(),
    "node_ip": pa.string(),
    "config_json": pa.string(),
    "code_version": pa.string(),  # the code that wrote the row (pipelines.engine.codeversion)
}
PARTITIONING = ds.partitioning(pa.schema([("pipeline", pa.string()), ("sweep", pa.string())]), flavor="hive")
TABLES = ("trials", "curves")
PART_PREFIX = "part-"  # many rows (a write batch or a compaction); any other name is one trial's file, named by its trial_key
PART_MIN_ROWS = 16  # write batches at least this large go into part files
JOURNAL_PREFIX = "_compaction-"


def _column_value(value):
    """Scalars stay as they are (ints as int64, floats as float64); anything else becomes JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _curve_table(key: str, curve: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{"trial_key": key, **{k: _column_value(v) for k, v in r.items()}} for r in curve])


def _row_table(key: str, row: dict) -> pa.Table:
    """One trial row: the core columns (fixed types), then the config and metrics."""
    core = {name: row.get(name) for name in CORE_COLUMNS}
    core["trial_key"] = key
    core["finished_at"] = core["finished_at"] or datetime.now(timezone.utc)
    core["code_version"] = core["code_version"] or version_text()
    table = pa.Table.from_pylist([core], schema=pa.schema(list(CORE_COLUMNS.items())))
    for name, value in row.items():
        if name not in CORE_COLUMNS:
            table = table.append_column(name, pa.array([_column_value(value)]))
    return table


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for ``schemas`` (types promoted, e.g. int to float); a column whose types cannot merge is read as text."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f
                continue
            try:
                fields[f.name] = pa.unify_schemas([pa.schema([fields[f.name]]), pa.schema([f])], promote_options="permissive")[0]
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                fields[f.name] = pa.field(f.name, pa.string())
    return pa.schema(list(fields.values()))


@dataclass(frozen=True)
class ConfigurationResult:
    """One finished configuration as the store writes it: its trial key, its row (config, metrics, core columns), its curve."""

    key: str
    row: dict
    curve: list[dict]


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
            if is_disk_full(exc):
                raise disk_full_error(f"the results {self.root}") from None
            raise GensweepError(f"results directory {self.root} is not writable: {exc}") from None

    def _write(self, path: str, table: pa.Table) -> None:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, path)

    def _write_bytes(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _delete(self, path: str) -> None:
        self.fs.delete_file(path)

    def write_trial(self, pipeline: str, sweep: str, key: str, row: dict, curve: list[dict]) -> None:
        """Write one finished trial: its row (core columns + config + metrics) and its curve."""
        if curve:
            self._write(f"{self._dir('curves', pipeline, sweep)}/{key}.parquet", _curve_table(key, curve))
        self._write(f"{self._dir('trials', pipeline, sweep)}/{key}.parquet", _row_table(key, row))

    def write_trials(self, pipeline: str, sweep: str, items: list[ConfigurationResult]) -> None:
        """Write finished configurations: one file each, or one part file per table for a large batch."""
        if len(items) < PART_MIN_ROWS:
            for item in items:
                self.write_trial(pipeline, sweep, item.key, item.row, item.curve)
            return
        name = f"{PART_PREFIX}{uuid.uuid4().hex[:16]}.parquet"
        curves = [_curve_table(item.key, item.curve) for item in items if item.curve]
        if curves:
            self._write(f"{self._dir('curves', pipeline, sweep)}/{name}", pa.concat_tables(curves, promote_options="permissive"))
        rows = pa.concat_tables([_row_table(item.key, item.row) for item in items], promote_options="permissive")
        self._write(f"{self._dir('trials', pipeline, sweep)}/{name}", rows)

    def _listing(self, table: str, pipeline: str | None, sweep: str | None) -> list[str]:
        selector = pafs.FileSelector(self._dir(table, pipeline, sweep), recursive=True, allow_not_found=True)
        return sorted(info.path for info in self.fs.get_file_info(selector) if info.path.endswith(".parquet"))

    def _journals(self, pipeline: str | None = None, sweep: str | None = None) -> list[tuple[str, dict]]:
        """(path, content) of the compaction journals under the trials folder (one per unfinished compaction)."""
        selector = pafs.FileSelector(self._dir("trials", pipeline, sweep), recursive=True, allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith(JOURNAL_PREFIX) and name.endswith(".json"):
                with self.fs.open_input_stream(info.path) as stream:
                    out.append((info.path, json.loads(stream.read().decode())))
        return out

    def _hidden(self, pipeline: str | None, sweep: str | None) -> set[str]:
        """Files readers skip: inputs of complete compactions, outputs of incomplete ones."""
        hidden: set[str] = set()
        for _, journal in self._journals(pipeline, sweep):
            outputs = list(journal["outputs"].values())
            complete = all(self.fs.get_file_info(o).type != pafs.FileType.NotFound for o in outputs)
            if complete:
                hidden.update(path for files in journal["inputs"].values() for path in files)
            else:
                hidden.update(outputs)
        return hidden

    def files(self, table: str, pipeline: str | None = None, sweep: str | None = None) -> list[str]:
        """The Parquet files the readers use for ``table`` (one per configuration, write batch or compaction)."""
        files = self._listing(table, pipeline, sweep)
        hidden = self._hidden(pipeline, sweep)
        files = [f for f in files if f not in hidden] if hidden else files
        if table == "curves":  # a curves part counts once its trials part exists
            parts = {f.rsplit("/", 1)[1] for f in self._listing("trials", pipeline, sweep) if f.rsplit("/", 1)[1].startswith(PART_PREFIX)}
            files = [f for f in files if not f.rsplit("/", 1)[1].startswith(PART_PREFIX) or f.rsplit("/", 1)[1] in parts]
        return files

    def finished_keys(self, pipeline: str, sweep: str) -> set[str]:
        """Trial keys that already have a result row in this sweep."""
        keys = set()
        for path in self.files("trials", pipeline, sweep):
            name = path.rsplit("/", 1)[1]
            if name.startswith(PART_PREFIX):
                keys.update(pq.read_table(path, columns=["trial_key"], filesystem=self.fs).column(0).to_pylist())
            else:
                keys.add(name[: -len(".parquet")])
        return keys

    def recover(self, pipeline: str | None = None, sweep: str | None = None) -> int:
        """Finish (all outputs written) or undo (otherwise) compactions that were killed; return how many."""
        journals = self._journals(pipeline, sweep)
        for path, journal in journals:
            outputs = list(journal["outputs"].values())
            present = [o for o in outputs if self.fs.get_file_info(o).type != pafs.FileType.NotFound]
            inputs = [file for files in journal["inputs"].values() for file in files]
            doomed = inputs if len(present) == len(outputs) else present
            for file in doomed:
                if self.fs.get_file_info(file).type != pafs.FileType.NotFound:
                    self._delete(file)
            self._delete(path)
        return len(journals)

    def compact(self, pipeline: str, sweep: str) -> dict[str, int]:
        """Merge the sweep's files into one file per table; idempotent; safe to kill (see the module docstring).

        Returns the number of files merged per table (0: nothing to do).
        """
        self.recover(pipeline, sweep)
        inputs = {t: self.files(t, pipeline, sweep) for t in TABLES}  # orphaned curve parts stay out (and are left)
        if all(len(files) <= 1 for files in inputs.values()):
            return {t: 0 for t in TABLES}
        inputs = {t: files for t, files in inputs.items() if files}  # both tables together: part names pair them
        ident = uuid.uuid4().hex[:16]
        outputs = {t: f"{self._dir(t, pipeline, sweep)}/{PART_PREFIX}{ident}.parquet" for t in inputs}
        journal = f"{self._dir('trials', pipeline, sweep)}/{JOURNAL_PREFIX}{ident}.json"
        self.fs.create_dir(journal.rsplit("/", 1)[0], recursive=True)
        self._write_bytes(journal, json.dumps({"inputs": inputs, "outputs": outputs}).encode())
        for table, files in inputs.items():
            merged = self._dataset(table, files).to_table().drop_columns(PARTITIONING.schema.names)
            self._write(outputs[table], merged)
        for files in inputs.values():
            for file in files:
                self._delete(file)
        self._delete(journal)
        return {t: len(inputs.get(t, [])) for t in TABLES}

    def _dataset(self, table: str, files: list[str]) -> ds.Dataset:
        """The files as one dataset with unified schemas and the pipeline / sweep partition columns."""
        base = self._dir(table)
        dataset = ds.dataset(files, filesystem=self.fs, format="parquet", partitioning=PARTITIONING, partition_base_dir=base)
        schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
        unified = _unify(schemas + [PARTITIONING.schema])
        return ds.dataset(files, schema=unified, filesystem=self.fs, format="parquet", partitioning=PARTITIONING, partition_base_dir=base)

    def read(self, table: str = "trials", pipeline: str | None = None, sweep: str | None = None) -> pd.DataFrame:
        """All rows of ``table`` (optionally one pipeline / sweep) with ``pipeline`` and ``sweep`` columns.

        Without ``pipeline`` each pipeline is read on its own and the frames
        concatenated: pipelines may give one column name different types
        (``hidden``: a width in one, a flag in another), which no one Arrow
        schema holds.
        """
        if pipeline is None:
            names = sorted({name for name, _ in self.pairs(table)})
            frames = [self.read(table, name, sweep) for name in names]
            frames = [f for f in frames if not f.empty]
            return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else pd.DataFrame()
        files = self.files(table, pipeline, sweep)
        if not files:
            return pd.DataFrame()
        return self._dataset(table, files).to_table().to_pandas()

    def pairs(self, table: str = "trials") -> list[tuple[str, str]]:
        """(pipeline, sweep) of every sweep folder holding ``table`` files, from the folder names alone (no file is read)."""
        selector = pafs.FileSelector(self._dir(table), recursive=True, allow_not_found=True)
        found = set()
        for info in self.fs.get_file_info(selector):
            if not info.path.endswith(".parquet"):
                continue
            parts = dict(part.split("=", 1) for part in info.path.split("/")[-3:-1] if "=" in part)
            if "pipeline" in parts and "sweep" in parts:
                found.add((parts["pipeline"], parts["sweep"]))
        return sorted(found)

    def sweeps(self, pipeline: str) -> list[str]:
        """Sweep ids of ``pipeline`` that have results, most recently finished last."""
        files = self.files("trials", pipeline)
        if not files:
            return []
        frame = self._dataset("trials", files).to_table(columns=["sweep", "finished_at"]).to_pandas()
        return list(frame.groupby("sweep")["finished_at"].max().sort_values().index)
