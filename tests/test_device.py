"""One device helper and block memory budget (core.device, tasks.device): CUDA when present, a trial's share of the GPU."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

import tasks.device
from core.device import GPU_MEMORY_SHARE, block_memory_budget, default_device, resolve_device

GIB = 2**30


@pytest.fixture
def fake_gpu(monkeypatch):
    """An 80 GiB CUDA device as far as the budget can tell; the trial holds a quarter of it."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * GIB))
    monkeypatch.setattr(tasks.device, "gpu_fraction", lambda: 0.25)


@pytest.mark.parametrize("available", [True, False])
def test_default_device_is_cuda_when_present(monkeypatch, available):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    expected = torch.device("cuda" if available else "cpu")
    assert default_device() == expected
    assert resolve_device(None) == resolve_device("") == resolve_device("auto") == expected
    assert tasks.device.trial_device({}) == expected
    assert resolve_device("cpu") == tasks.device.trial_device({"device": "cpu"}) == torch.device("cpu")


def test_budget_is_a_share_of_the_trials_part_of_the_gpu(fake_gpu):
    assert block_memory_budget("cuda", cpu_gb=8.0) == GPU_MEMORY_SHARE * 80 * GIB
    assert block_memory_budget("cuda", cpu_gb=8.0, gpu_fraction=0.25) == GPU_MEMORY_SHARE * 80 * GIB / 4
    assert block_memory_budget("cpu", cpu_gb=6.0, gpu_fraction=0.25) == 6 * GIB
    assert tasks.device.block_memory_bytes({}, "cuda", cpu_gb=8.0) == GPU_MEMORY_SHARE * 20 * GIB
    assert tasks.device.block_memory_bytes({"block_memory_gb": 0}, "cpu", cpu_gb=8.0) == 8 * GIB
    assert tasks.device.block_memory_bytes({"block_memory_gb": 2.5}, "cuda", cpu_gb=8.0) == 2.5 * GIB


def test_cmnist_and_domainbed_blocks_both_size_themselves_for_a_quarter_gpu(fake_gpu, monkeypatch):
    import tasks.cmnist
    import tasks.domainbed

    quarter = GPU_MEMORY_SHARE * 20 * GIB
    assert tasks.cmnist.memory_budget_bytes({}, "cuda") == quarter
    seen = {}

    def train_block(*args, **kwargs):
        seen.update(kwargs)
        raise StopIteration  # the budget is all this test needs

    monkeypatch.setattr(tasks.domainbed, "base_for", lambda *args: None)
    monkeypatch.setattr(tasks.domainbed, "train_block", train_block)
    config = dict(dataset="ColoredMNIST", method="erm", test_envs="0", seed=0, trial_seed=0, lr=1e-3, batch_size=8,
                  steps=2, checkpoint_freq=1, device="cuda")
    with pytest.raises(StopIteration):
        tasks.domainbed.run_domainbed(config, None, lambda report: None)
    assert seen["memory_bytes"] == quarter and seen["device"] == torch.device("cuda")


def test_gpu_fraction_is_rays_assigned_share(monkeypatch):
    def fake_ray(initialized: bool, resources: dict):
        context = SimpleNamespace(get_assigned_resources=lambda: resources)
        return SimpleNamespace(is_initialized=lambda: initialized, get_runtime_context=lambda: context)

    for initialized, resources, expected in ((True, {"GPU": 0.25, "CPU": 1.0}, 0.25), (True, {"CPU": 1.0}, 1.0),
                                             (True, {"GPU": 2.0}, 1.0), (False, {"GPU": 0.25}, 1.0)):
        monkeypatch.setitem(sys.modules, "ray", fake_ray(initialized, resources))
        assert tasks.device.gpu_fraction() == expected, (initialized, resources)
