"""Ray start-up and trial resources, shared by every pipeline."""
from __future__ import annotations

import logging
import os
import signal
import socket

from pipelines.engine.spec import GensweepError

TERMINATED: dict = {"signum": None}  # set when SIGTERM stopped this process (the CLI then exits 143)


def _on_sigterm(signum: int, frame) -> None:
    """SIGTERM (``timeout``, systemd, batch schedulers) stops a sweep as Ctrl+C does.

    The SIGINT handler in force is called: Ray Tune's ends the Tuner cleanly
    (what finished is recorded); Python's raises KeyboardInterrupt. A SIGINT
    that is ignored (a background job) still stops the sweep.
    """
    TERMINATED["signum"] = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _on_sigterm:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def handle_sigterm() -> None:
    """Route SIGTERM to the SIGINT handler (see :func:`_on_sigterm`); again after ``ray.init``, which installs its own."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def check_reachable(host: str, port: int, what: str, timeout: float = 5.0) -> None:
    """Fail fast with one line, ``cannot reach <what>: <reason>``, when nothing answers at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise GensweepError(f"cannot reach {what}: {exc.strerror or exc}") from None


def _ray_host_port(address: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise GensweepError(f"bad Ray address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host, int(port)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a local Ray runtime (default), or connect to a cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``).

    Local runtimes run without the dashboard. (Ray 2.60 advertises the
    machine's routable address even when asked for 127.0.0.1.)
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the runner adds the JSON logger only
    common = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    if address:
        if address != "auto":
            check_reachable(*_ray_host_port(address), f"Ray at {address}")
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise GensweepError(f"cannot connect to Ray at {address}: {str(exc).splitlines()[0]}") from None
    else:
        # "local": a new runtime even when `ray start` left one on this machine (address=None would join it).
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **common)
    handle_sigterm()  # Ray's driver handler exits at once (its C++ core then aborts, exit 134): stop cleanly instead


def trial_resources(cpus: float, gpus: float) -> dict:
    """Resources of one trial: ``gpus`` (a fraction is fine) only where the cluster has GPUs."""
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return {"cpu": cpus, "gpu": gpus if has_gpu else 0}
