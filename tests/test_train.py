"""The shared training loop: same numbers as the IRM-reference loop, and blocks equal separate runs."""
import pytest
import torch

from core.cmnist import models
from core.cmnist.domains import build_cmnist
from core.cmnist.shift import build_shifted_cmnist
from core.cmnist.reference import reference_train
from core.cmnist.train import ModelConfig, batch_inputs, train_block


@pytest.fixture(scope="module")
def domains(digits):
    return build_cmnist(digits, seed=0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("method", ["erm", "irm", "vrex", "mmrex", "ri"])
def test_matches_the_reference_loop(domains, method, reduction):
    # 12 steps crossing the anneal step (5) with a penalty weight > 1, so the rescaling path runs too;
    # "mean" is the IRM code's risk, "sum" the REx code's.
    config = ModelConfig(hidden=32, l2=0.001, lr=0.001, anneal_iters=5, penalty_weight=100.0, seed=7)
    ours = train_block(domains, method, [config], steps=12, eval_every=100, device=torch.device("cpu"), reduction=reduction)[0]
    ref = reference_train(domains, method, config, steps=12, reduction=reduction)
    for key in ("train_acc", "test_acc", "train_nll"):
        assert ours[key] == pytest.approx(ref[key], abs=2e-5), key


def test_four_channel_variant_matches_the_reference_loop(digits):
    # Colour imbalance: 4 channels, each image in one of them (the channel form's 1/4 first layer).
    shifted = build_shifted_cmnist(digits, "color", 0.2, seed=1)
    config = ModelConfig(hidden=32, l2=0.001, lr=0.001, anneal_iters=5, penalty_weight=100.0, seed=3)
    ours = train_block(shifted, "vrex", [config], steps=12, eval_every=100, device=torch.device("cpu"), reduction="sum")[0]
    ref = reference_train(shifted, "vrex", config, steps=12, reduction="sum")
    for key in ("train_acc", "test_acc", "train_nll"):
        assert ours[key] == pytest.approx(ref[key], abs=2e-5), key


def test_channel_form_first_layer_equals_the_dense_product():
    # Hand-made case: 3 channels of 196 pixels, rows in channels 2, 0, 2, 1 (one active channel each).
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 3, 14, 14)
    for row, channel in enumerate((2, 0, 2, 1)):
        x[row, channel] = torch.rand(14, 14, generator=gen)
    order = models.channel_order(x)
    assert order.tolist() == [1, 3, 0, 2]  # stable sort by channel
    inputs = models.channel_inputs(x[order])
    assert inputs.segments == ((0, 1, 0), (1, 2, 1), (2, 4, 2))
    w1 = torch.randn(3 * 196, 5, generator=gen, requires_grad=True)
    b1 = torch.randn(1, 5, generator=gen)
    sparse = models.first_layer(inputs, w1, b1)
    (g_sparse,) = torch.autograd.grad(sparse.square().sum(), w1)
    dense = models.first_layer(models.Inputs(x[order].flatten(1)), w1, b1)
    (g_dense,) = torch.autograd.grad(dense.square().sum(), w1)
    torch.testing.assert_close(sparse, dense)
    torch.testing.assert_close(g_sparse, g_dense)
    assert float(g_sparse[196:392].abs().sum()) > 0  # every channel's rows got their gradient


def test_two_channel_images_use_the_dense_form(domains):
    assert models.channel_order(torch.ones(2, 2, 14, 14)) is None
    inputs, ys = batch_inputs(domains.train, grayscale=False, device=torch.device("cpu"))
    assert [len(y) for y in ys] == [len(d.y) for d in domains.train]
    assert len(inputs.segments) == 4 and inputs.pixels.shape[1] == 196  # two domains x two colours
    gray, _ = batch_inputs(domains.train, grayscale=True, device=torch.device("cpu"))
    assert gray.segments == () and gray.pixels.shape[1] == 196


def test_block_equals_separate_runs(domains):
    configs = [
        ModelConfig(hidden=16, l2=0.001, lr=0.002, anneal_iters=3, penalty_weight=50.0, seed=1),
        ModelConfig(hidden=40, l2=0.0001, lr=0.0005, anneal_iters=6, penalty_weight=1000.0, seed=2),
        ModelConfig(hidden=24, l2=0.01, lr=0.001, anneal_iters=2, penalty_weight=0.5, seed=3),
    ]
    for method in ("irm", "vrex"):
        block = train_block(domains, method, configs, steps=10, eval_every=4, reduction="method")
        for config, together in zip(configs, block):
            alone = train_block(domains, method, [config], steps=10, eval_every=4, reduction="method")[0]
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


def test_padded_hidden_units_stay_exactly_zero():
    """Hidden widths are padded to a multiple of 8; the padding is exact: zero units get zero gradients."""
    from core.cmnist import models

    params = models.init_model(8, 5, seed=3)
    padded = [p.clone().requires_grad_() for p in models.pad_hidden(params, models.padded_width(5))]
    assert padded[0].shape == (8, 8) and padded[2].shape == (8, 8) and padded[4].shape == (8, 1)
    x = models.Inputs(torch.randn(20, 8))
    logits = models.forward([padded], x)
    expected = models.forward([params], x)
    torch.testing.assert_close(logits, expected)
    loss = logits.pow(2).mean() + models.squared_norm([padded]).sum()
    grads = torch.autograd.grad(loss, padded)
    assert grads[0][:, 5:].abs().max() == 0 and grads[1][:, 5:].abs().max() == 0
    assert grads[2][5:].abs().max() == 0 and grads[2][:, 5:].abs().max() == 0
    assert grads[3][:, 5:].abs().max() == 0 and grads[4][5:].abs().max() == 0
