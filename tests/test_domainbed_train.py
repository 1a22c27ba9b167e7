"""The stacked DomainBed trainer (core/domainbed/train.py): a block equals its runs trained alone, and a loop written
like DomainBed's train.py and algorithms.py (core/domainbed/reference.py); float64, a narrow ConvNet, a few steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import ImageSource
from core.domainbed import model as cnn
from core.domainbed.data import base_images
from core.domainbed.reference import reference_train
from core.domainbed.train import Run, checkpoint_steps, plan_groups, run_from_config, train_block

STEPS, FREQ, WIDTH = 7, 3, 0.125


@pytest.fixture(scope="module")
def src() -> ImageSource:
    rng = np.random.RandomState(0)
    return ImageSource("synthetic", rng.randint(0, 256, (120, 28, 28)).astype(np.uint8), rng.randint(0, 10, 120).astype(np.int64))


def _runs(dataset: str, method: str) -> list[Run]:
    """A block as the sweep trains it, plus a run of another batch size: three groups; every run its own lr, lambda,
    anneal step and eta (a block must keep them per model)."""
    return [Run(dataset, method, envs, seed=11 + i, trial_seed=i % 2, lr=1e-3 * (1 + i), batch_size=batch,
                penalty_weight=30.0 * (1 + i), anneal_iters=2 + i, eta=0.1 * (1 + i))
            for i, (envs, batch) in enumerate([((0,), 8), ((1,), 8), ((0, 2), 8), ((2,), 5)])]


def _curves(base, runs, **kw) -> list[list[dict]]:
    out = []
    train_block(base, runs, steps=STEPS, checkpoint_freq=FREQ, width=WIDTH, dtype=torch.float64,
                on_checkpoint=lambda step, rows: out.append(rows), **kw)
    return [[rows[i] for rows in out] for i in range(len(runs))]


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] == checkpoint_steps(STEPS, FREQ)
    for x, y in zip(a, b):
        for key in y:
            if key != "epoch":
                assert x[key] == pytest.approx(y[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("dataset,method", [("ColoredMNIST", "irm"), ("ColoredMNIST", "groupdro"), ("RotatedMNIST", "vrex")])
def test_block_equals_runs_alone(src, dataset, method):
    base = base_images(src, dataset)
    runs = _runs(dataset, method)
    assert sorted(map(len, plan_groups(runs))) == [1, 1, 2]
    stacked = _curves(base, runs, stacked=True)
    looped = _curves(base, runs, stacked=False)
    for i, run in enumerate(runs):
        alone = _curves(base, [run])[0]
        _close(stacked[i], alone)
        _close(looped[i], alone)


@pytest.mark.parametrize("dataset,method", [("ColoredMNIST", m) for m in ("erm", "irm", "vrex", "groupdro", "mmrex")]
                         + [("RotatedMNIST", "erm")])
def test_runs_equal_a_domainbed_loop(src, dataset, method):
    """Each algorithm's loss, the anneal step's new Adam, the minibatches and the accuracies, as train.py computes them."""
    base = base_images(src, dataset)
    for run in _runs(dataset, method)[1:3]:  # a single test environment and a pair
        _close(_curves(base, [run])[0], reference_train(base, run, steps=STEPS, checkpoint_freq=FREQ, width=WIDTH, dtype=torch.float64))


def test_split_by_memory_changes_nothing(src):
    base = base_images(src, "ColoredMNIST")
    runs = _runs("ColoredMNIST", "vrex")[:2]
    per_model = 8 * 2 * cnn.activation_bytes_per_example(WIDTH, 2)
    assert plan_groups(runs, WIDTH, per_model * 1.5) == [[0], [1]]
    for a, b in zip(_curves(base, runs, memory_bytes=per_model * 1.5), _curves(base, runs)):
        _close(a, b)


def test_stacked_forward_is_each_models_network():
    x = torch.rand(5, 3, 2, 28, 28)
    params = cnn.stack_params([cnn.init_params(2, 2, seed, 0.25) for seed in (1, 2, 3)])
    logits = cnn.stacked_forward(params, x)
    for k, seed in enumerate((1, 2, 3)):
        torch.manual_seed(seed)
        net = cnn.MnistCNN(2, 2, 0.25)
        assert torch.allclose(logits[k], net(x[:, k]), atol=1e-5)
    assert cnn.channels(1.0) == (64, 128, 128, 128) and cnn.channels(0.25) == (16, 32, 32, 32)


def test_run_from_config_reads_domainbeds_names():
    config = dict(dataset="ColoredMNIST", method="vrex", test_envs="0,2", seed=5, trial_seed=1, lr=1e-3, batch_size=64,
                  vrex_lambda=10.0, vrex_penalty_anneal_iters=500, anneal_scale=0.1, irm_lambda=99.0)
    run = run_from_config(config)
    assert run.test_envs == (0, 2) and run.train_envs() == [1]
    assert run.penalty_weight == 10.0 and run.anneal_iters == 50
    assert checkpoint_steps(5001, 100)[-2:] == [4900, 5000] and len(checkpoint_steps(5001, 100)) == 51


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_block_equals_cpu(src):
    base = base_images(src, "ColoredMNIST")
    runs = _runs("ColoredMNIST", "irm")
    for a, b in zip(_curves(base, runs, device="cuda", stacked=True), _curves(base, runs, device="cpu")):
        _close(a, b)
