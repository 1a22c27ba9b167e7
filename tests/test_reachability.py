"""One reachability probe (pipelines.engine.runtime.check_reachable) for Ray addresses and MLflow tracking servers."""
from __future__ import annotations

import socket

import pytest

from pipelines.engine import runtime, tracking
from pipelines.engine.spec import GensweepError


@pytest.fixture
def listening():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_probe_passes_a_listening_port_and_names_what_it_could_not_reach(listening, closed_port):
    runtime.check_reachable("127.0.0.1", listening, "anything")
    with pytest.raises(GensweepError, match=r"^cannot reach the thing: \S"):
        runtime.check_reachable("127.0.0.1", closed_port, "the thing")


def test_ray_and_mlflow_use_the_probe(monkeypatch, closed_port):
    probed = []

    def probe(host, port, what, timeout=5.0):
        probed.append((host, port, what))
        if what.startswith("Ray"):
            raise GensweepError("probed")  # stop before ray.init

    monkeypatch.setattr(runtime, "check_reachable", probe)
    monkeypatch.setattr(tracking, "check_reachable", probe)
    with pytest.raises(GensweepError, match="probed"):
        runtime.init_ray(f"ray://10.0.0.1:{closed_port}")
    tracking.check_server("https://mlflow.example.org/")
    tracking.check_server("sqlite:///tmp/mlflow.db")  # nothing to probe
    assert probed == [("10.0.0.1", closed_port, f"Ray at ray://10.0.0.1:{closed_port}"),
                      ("mlflow.example.org", 443, "MLflow tracking server https://mlflow.example.org/")]


def test_unreachable_servers_fail_with_one_line(closed_port):
    with pytest.raises(GensweepError, match=f"^cannot reach MLflow tracking server http://127.0.0.1:{closed_port}: "):
        tracking.check_server(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(GensweepError, match="bad Ray address"):
        runtime.init_ray("no-port-here")
