"""``gensweep``: run sweeps, render reports, list pipelines, browse MLflow.

    gensweep run PIPELINE [--preset smoke|paper] [--results DIR] [--data-dir DIR]
                          [--address RAY_ADDRESS] [--mlflow-uri URI] [--optuna-storage URL]
                          [--set key=value ...] [--allow-code-change]
    gensweep resume [RESULTS] [--sweep ID] [--allow-code-change]
    gensweep report PIPELINE [--results DIR] [--sweep ID] [--out DIR]
    gensweep compact [RESULTS] [--pipeline NAME] [--sweep ID]
    gensweep list
    gensweep sweeps [RESULTS]
    gensweep ui [--results DIR] [--host 127.0.0.1] [--port 5000]
    gensweep download mnist|maf-uci DIR

User errors print one line ``gensweep: error: ...`` and exit 2; a sweep that
ends with trials missing exits 1; an interrupted one exits 130 (Ctrl+C) or 143
(SIGTERM: the same clean stop).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from core.data import DataError
from pipelines.engine.spec import GensweepError, disk_full_error, is_disk_full

DEFAULT_RESULTS = "results"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        print(f"gensweep: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gensweep", description="Reproducible sweeps of generalization experiments on Ray Tune.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume) a pipeline's sweep")
    run.add_argument("pipeline")
    run.add_argument("--preset", default="smoke", help="preset of the pipeline's settings (default: smoke, the quick "
                                                       "check; see gensweep list)")
    run.add_argument("--results", default=DEFAULT_RESULTS, help="results directory or filesystem URI (default ./results)")
    run.add_argument("--data-dir", default=None, help="MNIST-format IDX directory (default: embedded scikit-learn digits)")
    run.add_argument("--address", default=None, help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: local)")
    run.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///RESULTS/mlflow.db)")
    run.add_argument("--optuna-storage", default=None, help="Optuna RDB URL (default: sqlite:///RESULTS/optuna.db)")
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    run.add_argument("--allow-code-change", action="store_true",
                     help="resume a sweep whose results another gensweep version (or code commit) recorded")

    resume = sub.add_parser("resume", help="re-run a sweep recorded in a results directory (default: the newest)")
    resume.add_argument("results", nargs="?", default=DEFAULT_RESULTS, help="results directory or URI (default ./results)")
    resume.add_argument("--sweep", default=None, help="sweep id (default: the most recently started)")
    resume.add_argument("--allow-code-change", action="store_true",
                        help="resume even though another gensweep version (or code commit) recorded the sweep")

    report = sub.add_parser("report", help="render a pipeline's table and figures from its Parquet results")
    report.add_argument("pipeline")
    report.add_argument("--results", default=DEFAULT_RESULTS)
    report.add_argument("--sweep", default=None, help="sweep id (default: the most recently finished)")
    report.add_argument(
        "--out", default=None,
        help="local directory for reports (default: RESULTS/reports, or ./reports when --results is a URI)",
    )

    compact = sub.add_parser("compact", help="merge each sweep's per-trial Parquet files into one file per table")
    compact.add_argument("results", nargs="?", default=DEFAULT_RESULTS, help="results directory or URI (default ./results)")
    compact.add_argument("--pipeline", default=None, help="only this pipeline (default: all)")
    compact.add_argument("--sweep", default=None, help="only this sweep id (default: all)")

    sub.add_parser("list", help="list pipelines, presets and their settings")

    sweeps = sub.add_parser("sweeps", help="every recorded sweep: pipeline, preset, data, code version, configurations done")
    sweeps.add_argument("results", nargs="?", default=DEFAULT_RESULTS, help="results directory or URI (default ./results)")

    ui = sub.add_parser("ui", help="MLflow UI on the results' SQLite store (bound to localhost); prints the URL of each "
                                   "experiment's runs")
    ui.add_argument("--results", default=DEFAULT_RESULTS)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)

    download = sub.add_parser("download", help="download a data set (needs internet)")
    download.add_argument("dataset", choices=["mnist", "maf-uci"])
    download.add_argument("directory")
    return parser


def cmd_run(args, expect_id: str | None = None) -> int:
    from pipelines import registry
    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.runtime import init_ray
    from pipelines.engine.spec import resolve_settings
    from pipelines.engine.versions import check_versions

    check_versions()  # Optuna, MLflow or Ray outside the tested range: one line, before anything starts
    pipeline = registry.get(args.pipeline)
    pipeline.check_installed()  # an optional extra missing: one line saying how to install it
    if args.num_cpus is not None and args.num_cpus < 1:
        raise GensweepError(f"bad --num-cpus {args.num_cpus}: a local Ray runtime needs at least 1 CPU")
    settings = resolve_settings(pipeline, args.preset, args.overrides)  # typed and checked: bad values end here
    pipeline.stages(settings)  # and the stages they make, before anything starts
    if args.address:
        init_ray(args.address, args.num_cpus)  # a bad cluster address fails before MLflow or results are touched
    sweep = Sweep(
        pipeline, args.preset, settings, args.results, data_dir=args.data_dir, address=args.address,
        mlflow_uri=args.mlflow_uri, optuna_storage=args.optuna_storage, num_cpus=args.num_cpus,
        overrides=list(args.overrides), expect_id=expect_id, allow_code_change=getattr(args, "allow_code_change", False),
    )
    summary = run_sweep(sweep)
    print(json.dumps(dataclasses.asdict(summary)))
    if summary.ran == 0 and summary.skipped == summary.total:
        print(f"[{pipeline.name}] all {summary.total} configurations already done; report: gensweep report {pipeline.name} --results {args.results}")
        return 0
    if not summary.complete:
        print(
            f"[{pipeline.name}] {summary.finished} of {summary.total} configurations done; re-run the same command "
            f"(or gensweep resume {args.results}) to resume",
            file=sys.stderr,
        )
        return 1
    print(f"[{pipeline.name}] done; report: gensweep report {pipeline.name} --results {args.results}")
    return 0


def cmd_resume(args) -> int:
    """Re-run a recorded sweep: the arguments of ``gensweep run`` stored in RESULTS/sweeps/<sweep id>.json."""
    from pipelines.engine.record import load_sweep_args

    recorded = load_sweep_args(args.results, args.sweep)
    run_args = argparse.Namespace(
        pipeline=recorded["pipeline"], preset=recorded["preset"], overrides=list(recorded.get("overrides", [])),
        results=args.results, data_dir=recorded.get("data_dir"), address=recorded.get("address"),
        mlflow_uri=recorded.get("mlflow_uri"), optuna_storage=recorded.get("optuna_storage"),
        num_cpus=recorded.get("num_cpus"), allow_code_change=args.allow_code_change,
    )
    options = [("--preset", run_args.preset), ("--results", run_args.results), ("--data-dir", run_args.data_dir),
               ("--address", run_args.address), ("--mlflow-uri", run_args.mlflow_uri),
               ("--optuna-storage", run_args.optuna_storage), ("--num-cpus", run_args.num_cpus)]
    options += [("--set", item) for item in run_args.overrides]
    command = " ".join([f"gensweep run {run_args.pipeline}"] + [f"{flag} {value}" for flag, value in options if value is not None])
    print(f"[{run_args.pipeline}] resuming sweep {recorded['sweep']}: {command}", flush=True)
    return cmd_run(run_args, expect_id=recorded["sweep"])


def cmd_report(args) -> int:
    from pipelines import registry
    from pipelines.engine.record import report_header
    from pipelines.engine.store import ResultStore

    pipeline = registry.get(args.pipeline)
    store = ResultStore.open(args.results)
    sweeps = store.sweeps(pipeline.name)
    if not sweeps:
        raise GensweepError(f"no results for {pipeline.name} in {args.results} (run: gensweep run {pipeline.name})")
    sweep = args.sweep or sweeps[-1]
    if sweep not in sweeps:
        raise GensweepError(f"no sweep {sweep!r} for {pipeline.name} (have: {', '.join(sweeps)})")
    trials, curves = store.read("trials", pipeline.name, sweep), store.read("curves", pipeline.name, sweep)
    root = Path(args.out) if args.out else Path("reports") if "://" in args.results else Path(args.results) / "reports"
    out_dir = root / pipeline.name / sweep
    try:  # a read-only or missing --out: one line naming the file, not a traceback
        out_dir.mkdir(parents=True, exist_ok=True)
        header = report_header(args.results, sweep, pipeline.preset_help)
        markdown = f"# {pipeline.name} — sweep {sweep}\n\n{pipeline.description}.\n\n{header}" + pipeline.report(trials, curves, str(out_dir))
        (out_dir / "report.md").write_text(markdown)
    except OSError as exc:
        if is_disk_full(exc):
            raise
        raise GensweepError(f"cannot write the report to {exc.filename or out_dir}: {exc.strerror or exc}") from None
    print(markdown)
    print(f"report written to {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir()))})")
    from pipelines.engine.tracking import log_report

    print(log_report(args.results, pipeline.name, sweep, str(out_dir)))  # on the sweep's MLflow parent run
    return 0


def cmd_compact(args) -> int:
    """Compact every (or one) sweep's results; killed midway, it is finished or undone by the next run."""
    from pipelines.engine.store import ResultStore

    store = ResultStore.open(args.results)
    pairs = [(p, s) for p, s in store.pairs() if args.pipeline in (None, p) and args.sweep in (None, s)]
    if not pairs:
        raise GensweepError(f"no results to compact in {args.results}")
    for pipeline, sweep in pairs:  # sweep by sweep: each pipeline (and sweep) has its own columns
        merged = store.compact(pipeline, sweep)
        rows = len(store.read("trials", pipeline, sweep))
        print(f"{pipeline} {sweep}: {rows} rows; merged {merged['trials']} trial files, {merged['curves']} curve files")
    return 0


def cmd_list(args) -> int:
    from pipelines import registry

    show = lambda value: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    for pipeline in registry.pipelines().values():
        needs = f" [needs the '{pipeline.extra}' extra: pip install 'gensweep[{pipeline.extra}]']" if pipeline.missing() else ""
        print(f"{pipeline.name}: {pipeline.description}{needs}")
        print("  settings (default; --set KEY=VALUE):")
        for key, setting in pipeline.all_settings().items():
            print(f"    {key} = {show(setting.default)}  # {setting.help}")
        for preset, overrides in pipeline.presets.items():
            changes = ", ".join(f"{k}={show(v)}" for k, v in overrides.items()) or "the defaults"
            note = f"  # {pipeline.preset_help[preset]}" if preset in pipeline.preset_help else ""
            print(f"  preset {preset}: {changes}{note}")
    return 0


def cmd_sweeps(args) -> int:
    """One line per recorded sweep, oldest first: what it ran on and with, how much of it is done."""
    from pipelines.engine.codeversion import version_text
    from pipelines.engine.record import sweep_records
    from pipelines.engine.store import ResultStore

    records = sweep_records(args.results)
    if not records:
        raise GensweepError(f"no recorded sweeps in {args.results} (start one with: gensweep run PIPELINE --results {args.results})")
    store = ResultStore.open(args.results)
    for record in records:
        done = len(store.finished_keys(record["pipeline"], record["sweep"]))
        total = record.get("total")
        state = "complete" if record.get("complete") and total is not None and done >= total else "incomplete"
        data = record.get("data", {}).get("description", "data not recorded")
        code = version_text(record["code"]) if record.get("code") else "code version not recorded"
        print(f"{record['sweep']}  {record['pipeline']}  preset {record['preset']}  {done}/{total if total is not None else '?'} "
              f"done, {state}  gensweep {code}  started {record.get('started_at', '?')[:19]}  data: {data}")
    return 0


def cmd_ui(args) -> int:
    if not 1 <= args.port <= 65535:
        raise GensweepError(f"bad --port {args.port}: a TCP port is 1-65535")
    db = Path(args.results).resolve() / "mlflow.db"
    if not db.is_file():
        raise GensweepError(f"no MLflow store at {db} (run a pipeline first)")
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, args.port))
    except OSError as exc:
        raise GensweepError(f"cannot serve the MLflow UI on {args.host}:{args.port}: {exc.strerror or exc}") from None
    from pipelines.engine.tracking import ui_urls

    command = ["mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", args.host, "--port", str(args.port)]
    print(" ".join(command))
    for name, url in ui_urls(db, args.host, args.port):  # with ?workflowType=machine_learning: MLflow 3 opens the runs
        print(f"open {name}: {url}")
    sys.stdout.flush()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    os.execv(str(mlflow_bin), command) if mlflow_bin.exists() else os.execvp("mlflow", command)
    return 0


def cmd_download(args) -> int:
    if args.dataset == "maf-uci":  # MAF's five sets (naf-tabular's paper preset): Zenodo 1161203 data.tar.gz, extracted
        from core.naf.data import download_maf_uci

        print(f"MAF data sets (POWER, GAS, HEPMASS, MINIBOONE, BSDS300) extracted to {download_maf_uci(args.directory)}")
        return 0
    from core.data import download_mnist

    print(f"MNIST downloaded to {download_mnist(args.directory)}")
    return 0


COMMANDS = {"run": cmd_run, "resume": cmd_resume, "report": cmd_report, "compact": cmd_compact, "list": cmd_list,
            "sweeps": cmd_sweeps, "ui": cmd_ui, "download": cmd_download}


def _quiet_libraries() -> None:
    """Keep MLflow/Alembic/Optuna INFO chatter off the console (errors still show)."""
    import logging

    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow logs a multi-line ERROR before it raises a database error; gensweep reports that error in one line itself.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has left (another broken pipe is a real error)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))  # a pipe without a reader reports an error
    except (OSError, ValueError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    from pipelines.engine.runtime import TERMINATED, handle_sigterm

    _quiet_libraries()
    args = build_parser().parse_args(argv)
    handle_sigterm()  # SIGTERM stops as Ctrl+C does, and exits 143
    try:
        if getattr(args, "results", None) is not None and not args.results.strip():
            raise GensweepError("bad --results '': give a results directory (default ./results)")
        code = COMMANDS[args.command](args)
        return 128 + TERMINATED["signum"] if TERMINATED["signum"] else code
    except (GensweepError, DataError) as exc:
        print(f"gensweep: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gensweep report ... | head -1`: the reader left; end quietly, as a tool killed by SIGPIPE
        if not _stdout_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or "a file gensweep writes"
        print(f"gensweep: error: {disk_full_error(where)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gensweep: interrupted; re-run the same command (or gensweep resume RESULTS) to resume", file=sys.stderr)
        return 128 + (TERMINATED["signum"] or 2)


if __name__ == "__main__":
    sys.exit(main())
