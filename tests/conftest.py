"""Shared fixtures: small image sources and the path to the project's CLI."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import ImageSource, load_digits_source

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
GENSWEEP = [sys.executable, "-m", "pipelines.cli"]

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``slow`` tests unless the ``-m`` expression names them (``-m slow``), so ``-m "not e2e"`` keeps them out."""
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def digits() -> ImageSource:
    return load_digits_source()


@pytest.fixture(scope="session")
def synthetic_source() -> ImageSource:
    """60,000 random 28x28 images with uniform digit labels: MNIST-sized, for label/colour statistics."""
    rng = np.random.default_rng(123)
    images = rng.integers(1, 256, size=(60000, 28, 28), dtype=np.uint8)
    return ImageSource("synthetic", images, rng.integers(0, 10, size=60000).astype(np.int64))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a loaded 2-core machine (restored after the module)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_session():
    """A real local Ray runtime (2 CPUs, no dashboard), shut down at the end of the module."""
    import ray

    from pipelines.engine.runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def expand(pipeline, preset: str, overrides=()) -> list[dict]:
    """Every config the stages of ``pipeline``'s ``preset`` declare up front (with ``overrides``, KEY=VALUE strings)."""
    from pipelines.engine.spec import resolve_settings

    settings = resolve_settings(pipeline, preset, list(overrides))
    return [c for stage in pipeline.stages(settings) for c in stage.plan.configs]


def rows(configs) -> list[dict]:
    """The configurations (result rows) those configs train: a block's entries each."""
    from tasks.report import configurations

    return [c for config in configs for c in configurations(config)]


def blocking_sitecustomize(blocked: tuple[str, ...]) -> str:
    """A ``sitecustomize.py`` that makes the top-level packages ``blocked`` unimportable (as if not installed)."""
    return f"""
import importlib.abc, sys

class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {tuple(blocked)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


@pytest.fixture
def float64():
    """Make float64 torch's default dtype for one test, then restore it (never set it at import: it leaks into other modules)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
