"""A real two-node Ray cluster on this machine: sweeps spread over both nodes and survive faults.

The cluster is ``ray start --head`` plus a second ``ray start --address`` node, each
``--num-cpus 1`` and ``--block``, started as separate process sessions; sweeps run
as ``gensweep run --address`` subprocesses. Every process a test starts (Ray nodes
with their raylets, agents and workers, drivers, MLflow and PostgreSQL servers) is
in a session of its own and is killed by session id at the end; nothing else on
the machine is touched (no ``ray stop``, which stops every Ray of the machine).

Notes on Ray 2.60 that shape the set-up:
- Both nodes share the head's temp/session dir (a worker node takes the head's
  temp dir and gets its own socket names), a short private dir under /tmp so
  that socket paths stay under the 107-byte limit and nothing mixes with other
  Ray sessions in /tmp/ray.
- On Linux, Ray replaces a loopback ``--node-ip-address``/``--address`` by the
  machine's routable IP and its servers listen on all interfaces, so the
  nodes advertise that IP; traffic stays on this machine. Ports are picked
  free (GCS, dashboard, dashboard agent), so other clusters here are not hit.
- A machine with ``~/.ray/auth_token`` makes ``ray start`` enable token
  authentication; the test sets ``RAY_AUTH_MODE=token`` and its own random
  ``RAY_AUTH_TOKEN`` for every process, which also keeps other drivers out.
- Tune stages one trial at a time for custom searchers (gensweep's grid
  searcher), and with ``reuse_actors`` a trial whose actor is still starting
  on the worker node is handed the head's actor as soon as a head trial ends.
  Trials of a few seconds could then all run on the head; the drivers here set
  ``TUNE_MAX_PENDING_TRIALS_PG=2`` so both nodes' actors start together.

Default run (~1.5-2.5 min on 2 cores): spread over both nodes, worker node
killed mid-sweep, driver killed and resumed (``gensweep resume``), bad cluster
input, reports of URI results. ``-m slow``: MLflow server + PostgreSQL (~2.5 min).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import GENSWEEP, ROOT
from pipelines.engine.store import ResultStore

RAY = str(Path(sys.executable).with_name("ray"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
TABLE = ["--set", "methods=irm,vrex,mmrex", "--set", "restarts=2", "--set", "steps=101", "--set", "eval_every=50"]
TABLE_TRIALS = 6  # 3 methods x 2 restarts
# The worker-kill test's trials: long enough that the sink's first write batch (up to FLUSH_S = 5 s after the
# first finished trial) leaves trials still to run on an idle machine, where 101 steps take ~2 s each.
TABLE_LONG = [*TABLE[:-4], "--set", "steps=601", "--set", "eval_every=200"]
SEARCH_BUDGET = 6
SEARCH = ["--set", f"num_samples={SEARCH_BUDGET}", "--set", "steps=301", "--set", "eval_every=100"]


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_members(sid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in session ``sid``."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


def kill_session(proc: subprocess.Popen, grace: float = 0.0) -> None:
    """Kill every process of the session ``proc`` leads (it was started with start_new_session=True).

    With ``grace``, first SIGTERM them all and give them that long to exit. The
    leader is reaped last, so its pid (the session id) cannot be reused meanwhile.
    """
    deadline = time.time() + grace
    for pid in _session_members(proc.pid) if grace else []:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    while time.time() < deadline and _session_members(proc.pid):
        time.sleep(0.2)
    deadline = time.time() + 30
    while time.time() < deadline:
        members = _session_members(proc.pid)
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    proc.wait(timeout=30)
    assert not _session_members(proc.pid), f"processes of session {proc.pid} survived"


def spawn(command: list[str], log: Path, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


ALIVE_NODES = """
import json, sys, time
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo

client, want, deadline = GcsClient(address=sys.argv[1]), int(sys.argv[2]), time.time() + float(sys.argv[3])
while True:
    infos = client.get_all_node_info(timeout=10, state_filter=GcsNodeInfo.GcsNodeState.ALIVE).values()
    nodes = [{"node_id": i.node_id.hex(), "head": i.is_head_node, "cpu": dict(i.resources_total).get("CPU", 0)} for i in infos]
    if len(nodes) == want or time.time() > deadline:
        print(json.dumps(nodes))
        break
    time.sleep(0.5)
"""


class Cluster:
    """A Ray head node and one worker node, each a ``ray start --block`` process session."""

    def __init__(self, base: Path):
        self.base = base
        self.temp_dir = tempfile.mkdtemp(prefix="gsr", dir="/tmp")  # short: Ray's socket paths live under it
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # Tune stages only 1 trial at a time for custom searchers (the grid's explicit one): with actor
            # reuse, a head actor freed by a short trial takes the staged trial whose actor is still starting
            # on the worker, over and over. Staging 2 starts both nodes' actors at once (see the module notes).
            "TUNE_MAX_PENDING_TRIALS_PG": "2",
            # a dead worker node is noticed within ~3 s (default ~15 s)
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.head_id = ""
        self.processes: list[subprocess.Popen] = []  # everything started, in order: head, workers, drivers
        self.workers: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = self.base / f"{name}.log"
        command = [RAY, "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                   "--dashboard-agent-listen-port", str(free_port()), "--block"]
        proc = spawn(command, log, self.env)
        self.processes.append(proc)
        wait_for(lambda: "Ray runtime started" in log.read_text(errors="replace"), 120, f"Ray {name} node", proc, log)
        return proc

    def start_head(self) -> None:
        self._start(
            ["--head", "--port", str(self.port), "--temp-dir", self.temp_dir, "--include-dashboard", "false",
             "--dashboard-port", str(free_port())],
            "head",
        )
        (self.head_id,) = [node["node_id"] for node in self.alive_nodes(1)]

    def start_worker(self) -> None:
        self.workers.append(self._start(["--address", self.address], f"worker{len(self.workers)}"))
        self.alive_nodes(2)

    def alive_nodes(self, want: int, timeout: float = 60) -> list[dict]:
        """The GCS's alive nodes, once there are ``want`` of them (each with its 1 CPU)."""
        proc = subprocess.run([sys.executable, "-c", ALIVE_NODES, self.address, str(want), str(timeout)], env=self.env,
                              capture_output=True, text=True, timeout=timeout + 60)
        nodes = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []
        assert len(nodes) == want and all(node["cpu"] == 1 for node in nodes), proc.stdout + proc.stderr
        return nodes

    @property
    def worker_alive(self) -> bool:
        return bool(self.workers) and self.workers[-1].poll() is None

    def kill_worker(self) -> None:
        """SIGKILL every process of the worker node: raylet, agents and the trials running there."""
        kill_session(self.workers[-1])

    def driver(self, args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        """``gensweep ARGS`` in the background, its output in ``log``."""
        proc = spawn(GENSWEEP + args, log, self.env, cwd)
        self.processes.append(proc)
        return proc

    def gensweep(self, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        """``gensweep ARGS`` to its end (its session killed on a timeout)."""
        proc = subprocess.Popen(GENSWEEP + args, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.processes.append(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            kill_session(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def diagnose(self, frame: pd.DataFrame) -> str:
        """Where the rows ran and how the nodes are, for assertion messages."""
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.base.glob("*.log")))
        exits = "\n".join(p.read_text(errors="replace")[-1500:] for p in Path(self.temp_dir).glob("session_*/logs/ray_process_exit.log"))
        return f"{frame['node_id'].value_counts(dropna=False)}\nworker alive: {self.worker_alive}\n{logs}\n{exits}"

    def stop(self) -> None:
        """Drivers first, then the worker nodes, the head last (with a moment to shut down cleanly)."""
        for proc in self.processes[::-1]:
            kill_session(proc, grace=2 if proc is self.processes[0] else 0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(base)
    try:
        cluster.start_head()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def two_nodes(cluster):
    """The module's cluster, with a live worker node (a test before may have killed it)."""
    if not cluster.worker_alive:
        cluster.start_worker()
    return cluster


# ---------------------------------------------------------------------------- results


def trial_files(results: Path) -> list[Path]:
    return list((results / "parquet" / "trials").rglob("*.parquet"))


def rows(results: Path, pipeline: str) -> pd.DataFrame:
    return ResultStore.open(str(results)).read("trials", pipeline)


def mlflow_runs(tracking_uri: str, pipeline: str) -> tuple[list, list]:
    """(parent runs, child runs) of the pipeline's experiment (deleted runs excluded)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(f"gensweep/{pipeline}")
    runs = client.search_runs([experiment.experiment_id], max_results=10000) if experiment else []
    parents = [r for r in runs if r.data.tags.get("gensweep.role") == "sweep"]
    children = [r for r in runs if "gensweep.trial_key" in r.data.tags]
    return parents, children


def optuna_states(storage_url: str) -> dict[str, int]:
    import optuna

    storage = optuna.storages.RDBStorage(storage_url)
    counts: dict[str, int] = {}
    for summary in optuna.get_all_study_summaries(storage):
        for trial in optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def check_exactly_once(results: Path, pipeline: str, expected: int, tracking_uri: str) -> pd.DataFrame:
    """``expected`` Parquet rows with unique keys, one FINISHED MLflow child per row and nothing else."""
    frame = rows(results, pipeline)
    assert len(frame) == expected and frame["trial_key"].is_unique, frame[["trial_key", "label"]]
    parents, children = mlflow_runs(tracking_uri, pipeline)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [p.info.status for p in parents]
    keys = [r.data.tags["gensweep.trial_key"] for r in children]
    assert sorted(keys) == sorted(frame["trial_key"]), "MLflow child runs != Parquet rows"
    assert all(r.info.status == "FINISHED" for r in children)
    return frame


def summary_of(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))


# ---------------------------------------------------------------------------- a: spread over both nodes


@pytest.fixture(scope="module")
def table_sweep(cluster, tmp_path_factory):
    """An uninterrupted cmnist-table sweep on the two-node cluster; later tests reuse its results."""
    if not cluster.worker_alive:
        cluster.start_worker()
    work = tmp_path_factory.mktemp("table")
    results = work / "results"
    started = time.time()
    proc = cluster.gensweep(["run", "cmnist-table", "--address", cluster.address, "--results", str(results), *TABLE], work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results, summary_of(proc.stdout), time.time() - started


@pytest.mark.e2e
def test_smoke_sweep_spreads_over_both_nodes(cluster, table_sweep):
    results, summary, _ = table_sweep
    assert summary["complete"] and summary["ran"] == TABLE_TRIALS and summary["failed"] == 0
    frame = check_exactly_once(results, "cmnist-table", TABLE_TRIALS, f"sqlite:///{results / 'mlflow.db'}")
    assert frame["node_id"].notna().all() and frame["node_id"].nunique() == 2, cluster.diagnose(frame)
    curves = ResultStore.open(str(results)).read("curves", "cmnist-table")
    assert set(curves["trial_key"]) == set(frame["trial_key"])
    recorded = json.loads((results / "sweeps" / f"{summary['sweep']}.json").read_text())
    assert recorded["pipeline"] == "cmnist-table" and recorded["preset"] == "smoke"
    assert recorded["overrides"] == TABLE[1::2] and recorded["address"] == cluster.address


# ---------------------------------------------------------------------------- c: driver killed, then resumed


def kill_driver_then_resume(cluster: Cluster, work: Path, extra: list[str]) -> tuple[Path, subprocess.CompletedProcess, int]:
    """Start cmnist-search, SIGKILL the driver once its first write batch has rows, resume with ``gensweep resume``.

    Rows arrive in write batches (the first when the first trial ends while
    others still run), so the kill lands between batches, mid-sweep.
    """
    results = work / "results"
    command = ["run", "cmnist-search", "--address", cluster.address, "--results", str(results), *extra, *SEARCH]
    log = work / "killed.log"
    driver = cluster.driver(command, log, work)
    wait_for(lambda: len(trial_files(results)) >= 1, 300, "a first write batch", driver, log)
    driver.send_signal(signal.SIGKILL)  # the driver dies mid-sweep, without any clean-up
    kill_session(driver)
    interrupted = len(trial_files(results))
    assert 1 <= interrupted < SEARCH_BUDGET, log.read_text()
    resumed = cluster.gensweep(["resume", str(results)], work)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{SEARCH_BUDGET - interrupted} of {SEARCH_BUDGET} configurations to run" in resumed.stdout, resumed.stdout
    return results, resumed, interrupted


@pytest.mark.e2e
def test_driver_killed_mid_sweep_then_resumed(two_nodes, tmp_path):
    results, resumed, _ = kill_driver_then_resume(two_nodes, tmp_path, [])
    summary = summary_of(resumed.stdout)
    assert summary["complete"] and summary["finished"] == SEARCH_BUDGET
    # what an uninterrupted run ends with: SEARCH_BUDGET rows, child runs and COMPLETE trials, nothing RUNNING
    frame = check_exactly_once(results, "cmnist-search", SEARCH_BUDGET, f"sqlite:///{results / 'mlflow.db'}")
    assert not frame.duplicated(["hidden", "l2", "lr", "anneal_iters", "penalty_weight"]).any()
    states = optuna_states(f"sqlite:///{results / 'optuna.db'}")
    assert states.get("COMPLETE") == SEARCH_BUDGET and not states.get("RUNNING"), states
    again = two_nodes.gensweep(["resume", str(results)], tmp_path)  # resuming a finished sweep runs nothing
    assert again.returncode == 0 and "0 of 6 configurations to run" in again.stdout, again.stdout + again.stderr
    assert len(rows(results, "cmnist-search")) == SEARCH_BUDGET


# ---------------------------------------------------------------------------- e: bad cluster input


def read_only(command: list[str], path: Path) -> list[str]:
    """``command`` run with ``path`` bind-mounted read-only in a mount namespace of its own."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind -o ro "$1" "$1" && shift && exec "$@"', "sh", str(path), *command]


def _can_mount_read_only(path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(read_only(["sh", "-c", f"! touch {path}/.ro-probe 2>/dev/null"], path), capture_output=True)
    (path / ".ro-probe").unlink(missing_ok=True)
    return probe.returncode == 0


BAD_INPUT = {
    "unreachable address": (lambda c: ["--address", f"127.0.0.1:{free_port()}"], "cannot reach Ray at 127.0.0.1:"),
    "unreachable mlflow": (lambda c: ["--address", c.address, "--mlflow-uri", f"http://127.0.0.1:{free_port()}"],
                           "cannot reach MLflow tracking server http://127.0.0.1:"),
    "read-only results": (lambda c: ["--address", c.address], "is not writable"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_cluster_input_fails_cleanly_and_keeps_results(case, cluster, table_sweep, tmp_path):
    results, summary, _ = table_sweep
    extra, message = BAD_INPUT[case]
    before = rows(results, "cmnist-table").sort_values("trial_key").reset_index(drop=True)
    tracking = f"sqlite:///{results / 'mlflow.db'}"
    command = GENSWEEP + ["run", "cmnist-table", "--results", str(results), *extra(cluster), *TABLE]
    mode = results.stat().st_mode
    if case == "read-only results":
        if os.geteuid() != 0:
            results.chmod(0o555)
        elif _can_mount_read_only(results):
            command = read_only(command, results)
        else:
            pytest.skip("root without mount namespaces (unshare -m): cannot make a read-only directory here")
    try:
        proc = subprocess.run(command, cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=300)
    finally:
        results.chmod(mode)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("gensweep: error: ") and message in lines[0], lines[0]
    after = rows(results, "cmnist-table").sort_values("trial_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    check_exactly_once(results, "cmnist-table", TABLE_TRIALS, tracking)  # the parent run is still FINISHED


def test_resume_errors(tmp_path):
    """No recorded sweep, or a record the current presets no longer reproduce: one error line, nothing run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    resume = lambda results: subprocess.run(GENSWEEP + ["resume", str(results)], cwd=tmp_path, capture_output=True,
                                            text=True, timeout=120, env=env)
    proc = resume(tmp_path / "none")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "gensweep: error: no recorded sweeps in" in proc.stderr
    stale = tmp_path / "stale"
    (stale / "sweeps").mkdir(parents=True)
    record = {"sweep": "smoke-0000000000", "pipeline": "cmnist-table", "preset": "smoke", "overrides": ["restarts=1"],
              "started_at": "2026-01-01T00:00:00+00:00"}
    (stale / "sweeps" / "smoke-0000000000.json").write_text(json.dumps(record))
    proc = resume(stale)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "the recorded command of sweep smoke-0000000000 now gives sweep smoke-" in proc.stderr
    assert sorted(p.name for p in stale.iterdir()) == ["sweeps"]  # no MLflow store, no Parquet


def test_sweep_record_holds_no_passwords(tmp_path):
    from pipelines import registry
    from pipelines.engine.record import load_sweep_args, save_sweep_args
    from pipelines.engine.runner import Sweep

    sweep = Sweep(registry.get("cmnist-table"), "smoke", {}, str(tmp_path), mlflow_uri="https://ann:pw1@mlflow.example.org",
                  optuna_storage="postgresql://ann:pw2@db:5432/optuna", overrides=["restarts=1"])
    sweep.id = "smoke-0123456789"
    save_sweep_args(ResultStore.open(str(tmp_path)), sweep)
    text = (tmp_path / "sweeps" / "smoke-0123456789.json").read_text()
    assert "pw1" not in text and "pw2" not in text
    recorded = load_sweep_args(str(tmp_path))
    assert recorded["optuna_storage"] == "postgresql://ann@db:5432/optuna" and recorded["overrides"] == ["restarts=1"]
    assert recorded["mlflow_uri"] == "https://ann@mlflow.example.org"


# ---------------------------------------------------------------------------- reports of URI results


@pytest.mark.e2e
def test_report_of_uri_results_goes_to_local_dir(table_sweep, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    results, summary, _ = table_sweep
    monkeypatch.chdir(tmp_path)
    assert main(["report", "cmnist-table", "--results", f"file://{results}"]) == 0
    assert (tmp_path / "reports" / "cmnist-table" / summary["sweep"] / "report.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # no directory named like the URI
    assert main(["report", "cmnist-table", "--results", f"file://{results}", "--out", str(tmp_path / "out")]) == 0
    assert {"report.md", "table.png"} <= {p.name for p in (tmp_path / "out" / "cmnist-table" / summary["sweep"]).iterdir()}
    capsys.readouterr()


# ---------------------------------------------------------------------------- b: worker node killed


@pytest.mark.e2e
def test_worker_node_killed_mid_sweep(two_nodes, tmp_path):
    results = tmp_path / "results"
    log = tmp_path / "driver.log"
    driver = two_nodes.driver(["run", "cmnist-table", "--address", two_nodes.address, "--results", str(results), *TABLE_LONG],
                              log, tmp_path)
    wait_for(lambda: len(trial_files(results)) >= 1, 300, "a first write batch", driver, log)
    killed_at = pd.Timestamp.now(tz="UTC")
    two_nodes.kill_worker()  # the trial running there dies with it; Tune retries it on the head
    assert len(trial_files(results)) < TABLE_TRIALS - 1
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    summary = summary_of(log.read_text())
    assert summary["complete"] and summary["failed"] == 0
    frame = check_exactly_once(results, "cmnist-table", TABLE_TRIALS, f"sqlite:///{results / 'mlflow.db'}")
    later = frame[frame["finished_at"] > killed_at + pd.Timedelta(seconds=1)]
    assert len(later) >= 2 and set(later["node_id"]) == {two_nodes.head_id}  # only the head was left
    errors = list((results / "tune").rglob("error.txt"))
    assert errors, "no trial was retried"


# ---------------------------------------------------------------------------- d: MLflow server + PostgreSQL (slow)


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth), run as an unprivileged user; yields its URL base."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres); install them, e.g. apt-get install postgresql")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 not installed: pip install -e '.[cluster]'")
    from sqlalchemy.engine.url import make_url

    try:  # the driver SQLAlchemy uses for postgresql:// (psycopg 3 from SQLAlchemy 2.1 on)
        make_url("postgresql://").get_dialect().import_dbapi()
    except ImportError as exc:
        pytest.skip(f"no PostgreSQL driver for SQLAlchemy ({exc}): pip install -e '.[cluster]'")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a 'postgres'/'nobody' user or runuser: cannot start PostgreSQL")
        run_as = ["runuser", "-u", user, "--"]

    base = Path(tempfile.mkdtemp(prefix="gspg", dir="/tmp"))  # outside root's 0700 pytest dirs
    data, port, log, server = base / "data", free_port(), tmp_path / "postgres.log", None
    try:
        if run_as:
            import pwd

            entry = pwd.getpwnam(run_as[2])
            os.chown(base, entry.pw_uid, entry.pw_gid)
        init = subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N",
                                        "-E", "UTF8"], capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, init.stdout + init.stderr
        server = spawn(run_as + [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                 "-k", str(base), "-c", "fsync=off"], log, {**os.environ})

        def ready() -> bool:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
                return True
            except psycopg2.OperationalError:
                return False

        wait_for(ready, 60, "PostgreSQL", server, log)
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE optuna")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if server is not None:
            subprocess.run(run_as + [str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "20"],
                           capture_output=True, timeout=60)  # a clean stop releases its shared memory
            kill_session(server)
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 with a SQLite backend; yields its URL."""
    port = free_port()
    log = tmp_path / "mlflow.log"
    server = spawn([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow-server.db'}",
                    "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1"], log, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(ready, 120, "mlflow server", server, log)
        yield url
    finally:
        kill_session(server, grace=5)


@pytest.mark.e2e
@pytest.mark.slow
def test_tracking_server_and_postgres(two_nodes, tmp_path, mlflow_server, postgres):
    storage = f"{postgres}/optuna"
    extra = ["--mlflow-uri", mlflow_server, "--optuna-storage", storage]
    results, resumed, _ = kill_driver_then_resume(two_nodes, tmp_path, extra)
    recorded = json.loads(next((results / "sweeps").glob("*.json")).read_text())
    assert recorded["mlflow_uri"] == mlflow_server and recorded["optuna_storage"] == storage
    frame = check_exactly_once(results, "cmnist-search", SEARCH_BUDGET, mlflow_server)
    assert frame["node_id"].notna().all()
    states = optuna_states(storage)
    assert states.get("COMPLETE") == SEARCH_BUDGET and not states.get("RUNNING"), states
    assert not (results / "mlflow.db").exists() and not (results / "optuna.db").exists()
