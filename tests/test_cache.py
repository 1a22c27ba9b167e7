"""tasks.cache.WorkerCache: each value built once per key, the least recently used dropped beyond the size."""
from __future__ import annotations

import numpy as np
import torch

from core.data import ImageSource
from tasks.cache import WorkerCache


def test_builds_once_per_key_and_drops_the_least_recently_used():
    built = []

    def build(key):
        return lambda: built.append(key) or f"value {key}"

    cache = WorkerCache(2)
    assert cache.get("a", build("a")) == "value a" and cache.get("a", build("a")) == "value a"
    cache.get("b", build("b"))
    cache.get("a", build("a"))  # a used last: b goes first
    cache.get("c", build("c"))
    assert built == ["a", "b", "c"] and len(cache) == 2 and "a" in cache and "b" not in cache and "c" in cache
    cache.get("b", build("b"))
    assert built == ["a", "b", "c", "b"] and "a" not in cache


def test_domainbed_base_images_are_built_once_per_worker(monkeypatch):
    import tasks.domainbed

    rng = np.random.RandomState(0)
    source = ImageSource("synthetic", rng.randint(0, 256, (40, 28, 28)).astype(np.uint8), rng.randint(0, 10, 40).astype(np.int64))
    calls = []
    real = tasks.domainbed.dbdata.base_images
    monkeypatch.setattr(tasks.domainbed.dbdata, "base_images", lambda *args: calls.append(args) or real(*args))
    monkeypatch.setattr(tasks.domainbed, "_BASES", WorkerCache(2))
    cpu = torch.device("cpu")
    first = tasks.domainbed.base_for(source, "ColoredMNIST", cpu)
    assert tasks.domainbed.base_for(source, "ColoredMNIST", cpu) is first and len(calls) == 1
    assert tasks.domainbed.base_for(source, "RotatedMNIST", cpu) is not first and len(calls) == 2
