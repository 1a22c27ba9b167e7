"""The shared training loop: same numbers as the IRM-reference loop, and blocks equal separate runs."""
import pytest
import torch

from core.cmnist import build_cmnist
from core.reference import reference_train
from core.train import ModelConfig, train_block


@pytest.fixture(scope="module")
def domains(digits):
    return build_cmnist(digits, seed=0)


@pytest.mark.parametrize("method", ["erm", "irm", "vrex", "mmrex"])
def test_matches_the_reference_loop(domains, method):
    # 12 steps crossing the anneal step (5) with a penalty weight > 1, so the rescaling path runs too.
    config = ModelConfig(hidden=32, l2=0.001, lr=0.001, anneal_iters=5, penalty_weight=100.0, seed=7)
    ours = train_block(domains, method, [config], steps=12, eval_every=100, device=torch.device("cpu"))[0]
    ref = reference_train(domains, method, config, steps=12)
    for key in ("train_acc", "test_acc", "train_nll"):
        assert ours[key] == pytest.approx(ref[key], abs=2e-5), key


def test_block_equals_separate_runs(domains):
    configs = [
        ModelConfig(hidden=16, l2=0.001, lr=0.002, anneal_iters=3, penalty_weight=50.0, seed=1),
        ModelConfig(hidden=40, l2=0.0001, lr=0.0005, anneal_iters=6, penalty_weight=1000.0, seed=2),
        ModelConfig(hidden=24, l2=0.01, lr=0.001, anneal_iters=2, penalty_weight=0.5, seed=3),
    ]
    for method in ("irm", "vrex"):
        block = train_block(domains, method, configs, steps=10, eval_every=4)
        for config, together in zip(configs, block):
            alone = train_block(domains, method, [config], steps=10, eval_every=4)[0]
            assert together.keys() == alone.keys()
            for key in together:
                assert together[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-5), (method, key)


def test_eval_schedule_and_metrics(domains):
    seen = []
    final = train_block(domains, "irm", [ModelConfig(hidden=8)], steps=11, eval_every=5, on_eval=lambda s, rows: seen.append(s))
    assert seen == [0, 5, 10]
    row = final[0]
    for key in ("train1_acc", "train2_acc", "test_acc", "train_acc", "train_nll", "test_nll", "train_penalty", "rex_penalty", "min_acc"):
        assert key in row
    assert row["min_acc"] == min(row["train1_acc"], row["train2_acc"], row["test_acc"])
    assert row["train_acc"] == pytest.approx((row["train1_acc"] + row["train2_acc"]) / 2)


def test_grayscale_model_ignores_colour(domains):
    # The oracle sums the colour channels, so swapping them changes nothing.
    swapped = type(domains)(
        train=[type(d)(d.name, d.x.flip(1), d.y, 1 - d.color) for d in domains.train],
        test=[type(d)(d.name, d.x.flip(1), d.y, 1 - d.color) for d in domains.test],
    )
    config = [ModelConfig(hidden=8, seed=3)]
    a = train_block(domains, "grayscale", config, steps=3)[0]
    b = train_block(swapped, "grayscale", config, steps=3)[0]
    assert a["test_acc"] == pytest.approx(b["test_acc"]) and a["train_nll"] == pytest.approx(b["train_nll"], rel=1e-5)
