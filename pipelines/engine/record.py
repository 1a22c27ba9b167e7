"""The sweep record: each sweep's command arguments, kept in RESULTS/sweeps/<sweep id>.json for ``gensweep resume``."""
from __future__ import annotations

import os

from pipelines.engine.spec import GensweepError
from pipelines.engine.store import ResultStore

SWEEPS_DIR = "sweeps"  # RESULTS/sweeps/<sweep id>.json: the arguments of each sweep, for `gensweep resume`


def _without_password(url: str | None) -> str | None:
    """``url`` with any password taken out (``scheme://user:pw@host`` -> ``scheme://user@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))


def describe_data(data) -> str:
    """What a sweep's data is, in words (its ``description``, else its fingerprint)."""
    return getattr(data, "description", "") or str(data.fingerprint)


def settings_changed(pipeline, preset: str, settings: dict) -> dict:
    """The result settings whose value differs from the preset's."""
    from pipelines.engine.spec import resolve_settings, result_settings

    base = resolve_settings(pipeline, preset, [])
    return {k: v for k, v in result_settings(settings).items() if base.get(k) != v}


def save_sweep_args(store: ResultStore, sweep, data=None) -> None:
    """Record the sweep's command arguments, data and settings (written on every start, so the newest start is last).

    Besides what ``gensweep resume`` needs, the record says what the sweep ran
    on (``data``: description and fingerprint), with what (``settings``, and
    ``changed``: those differing from the preset), for reports, and with which
    code (``code``: :func:`pipelines.engine.codeversion.code_version`). Passwords in
    URLs are left out: results hold no credentials (give them through
    ~/.pgpass or the environment, as docs/cluster.md shows).
    """
    from datetime import datetime, timezone

    from pipelines.engine.codeversion import code_version

    local = lambda path: path if path is None or "://" in path else os.path.abspath(path)
    args = {
        "sweep": sweep.id, "pipeline": sweep.pipeline.name, "preset": sweep.preset, "overrides": list(sweep.overrides),
        "data_dir": local(sweep.data_dir), "address": _without_password(sweep.address),
        "mlflow_uri": _without_password(sweep.mlflow_uri), "optuna_storage": _without_password(sweep.optuna_storage),
        "num_cpus": sweep.num_cpus,
        "started_at": datetime.now(timezone.utc).isoformat(),
        "code": code_version(),
    }
    if data is not None:
        from pipelines.engine.spec import result_settings

        args["data"] = {"description": describe_data(data), "fingerprint": data.fingerprint}
        args["settings"] = result_settings(sweep.settings)
        args["changed"] = settings_changed(sweep.pipeline, sweep.preset, sweep.settings)
    before = _read_record(store, sweep.id) or {}
    if "total" in before:  # the same sweep id plans the same configurations: `gensweep sweeps` keeps its total
        args["total"] = before["total"]
    _write_record(store, sweep.id, args)


def _read_record(store: ResultStore, sweep_id: str) -> dict | None:
    import json

    try:
        with store.fs.open_input_stream(f"{store.root}/{SWEEPS_DIR}/{sweep_id}.json") as stream:
            return json.loads(stream.read())
    except (OSError, ValueError):
        return None


def _write_record(store: ResultStore, sweep_id: str, args: dict) -> None:
    """Write a sweep's record atomically (a temporary file, then a rename)."""
    import json
    import uuid

    path = f"{store.root}/{SWEEPS_DIR}/{sweep_id}.json"
    json_default = lambda value: value.item() if hasattr(value, "item") else str(value)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    store.fs.create_dir(f"{store.root}/{SWEEPS_DIR}", recursive=True)
    with store.fs.open_output_stream(tmp) as out:
        out.write(json.dumps(args, indent=1, default=json_default).encode())
    store.fs.move(tmp, path)


def update_sweep_record(store: ResultStore, sweep_id: str, **fields) -> None:
    """Add ``fields`` (``total``, ``finished``, ``complete`` at the end of a run) to the sweep's record, if it has one."""
    args = _read_record(store, sweep_id)
    if args is not None:
        _write_record(store, sweep_id, {**args, **fields})


def sweep_records(results: str) -> list[dict]:
    """Every sweep record in ``results``, oldest start first (unreadable ones skipped)."""
    import json

    import pyarrow.fs as pafs

    store = ResultStore.open(results)
    records = []
    for info in store.fs.get_file_info(pafs.FileSelector(f"{store.root}/{SWEEPS_DIR}", allow_not_found=True)):
        if info.path.endswith(".json"):
            try:
                with store.fs.open_input_stream(info.path) as stream:
                    records.append(json.loads(stream.read()))
            except (OSError, ValueError):
                continue
    return sorted((r for r in records if isinstance(r, dict) and "sweep" in r), key=lambda r: r.get("started_at", ""))


def load_sweep_args(results: str, sweep: str | None = None) -> dict:
    """The recorded arguments of sweep ``sweep``, or of the most recently started sweep in ``results``."""
    import json

    import pyarrow.fs as pafs

    store = ResultStore.open(results)
    selector = pafs.FileSelector(f"{store.root}/{SWEEPS_DIR}", allow_not_found=True)
    found = {}
    for info in store.fs.get_file_info(selector):
        if info.path.endswith(".json"):
            try:
                with store.fs.open_input_stream(info.path) as stream:
                    args = json.loads(stream.read())
                found[args["sweep"]] = args
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise GensweepError(f"cannot read sweep record {info.path}: {exc}") from None
    if not found:
        raise GensweepError(f"no recorded sweeps in {results} (start one with: gensweep run PIPELINE --results {results})")
    if sweep is None:
        return max(found.values(), key=lambda args: args["started_at"])
    if sweep not in found:
        raise GensweepError(f"no recorded sweep {sweep!r} in {results} (have: {', '.join(sorted(found))})")
    return found[sweep]


def report_header(results: str, sweep: str, preset_help: dict | None = None) -> str:
    """Markdown lines naming a sweep's data, preset (with its ``preset_help`` line) and the settings changed from it."""
    try:
        record = load_sweep_args(results, sweep)
    except GensweepError:
        return "Data, preset and settings: not recorded (no sweep record in the results).\n\n"
    data = record.get("data", {}).get("description", "not recorded (a sweep started before gensweep recorded it)")
    changed = record.get("changed")
    show = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)
    if changed is None:
        settings = "not recorded"
    else:
        settings = ", ".join(f"{k}={show(v)}" for k, v in changed.items()) or "none (the preset as it is)"
    note = (preset_help or {}).get(record["preset"])
    preset = f"{record['preset']} ({note})" if note else record["preset"]
    return f"- **Data:** {data}\n- **Preset:** {preset}\n- **Settings changed from the preset:** {settings}\n\n"


def check_code_version(results: str, sweep_id: str, has_results: bool, allow: bool) -> None:
    """GensweepError (one line) when the sweep's results were recorded by another code version, unless ``allow``.

    A sweep with no results yet, or recorded before gensweep kept its code version, resumes as before;
    ``GENSWEEP_ALLOW_CODE_CHANGE=1`` allows it as the flag does (scripts, a test suite run while code is committed).
    """
    import os

    from pipelines.engine.codeversion import ALLOW_ENV, code_version, version_text

    if not has_results or allow or os.environ.get(ALLOW_ENV) == "1":
        return
    try:
        recorded = load_sweep_args(results, sweep_id)
    except GensweepError:
        return
    before = recorded.get("code")
    if not before:
        return
    if version_text(before) != version_text(code_version()):
        raise GensweepError(
            f"sweep {sweep_id} was recorded with gensweep {version_text(before)}, this is {version_text()}: resuming "
            "would mix results of two code versions; pass --allow-code-change to resume it anyway, or use a new --results"
        )
