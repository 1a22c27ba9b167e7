"""Core of the memorization study: data and noise sets, models, LASS, loss-sensitivity, training loops."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.data import DataError, load_digits_source
from core.memorization import data as mdata
from core.memorization import lass as lass_module
from core.memorization import train as train_module
from core.memorization.data import ImageSet, load_cifar10, load_images, one_class_per_example, rand_x, rand_y, split
from core.memorization.lass import ALPHA, BETA, MAX_ITER, MIN_NEW, RADIUS, adversarial_loss, critical_sample_ratio, lass
from core.memorization.models import GaussianNoise, mlp, mlp_weights, small_cnn
from core.memorization.seeds import init_block, misclassification_rate, train_grid, train_seeds
from core.memorization.sensitivity import (
    gini,
    per_class_matrix,
    sgd_batches,
    unroll,
    unrolled_gradient,
    unrolled_sensitivity,
    unrolled_sensitivity_block,
)
from core.memorization.train import epoch_batches, epochs_to_fit, stream_seed, train

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


pytestmark = pytest.mark.usefixtures("one_thread")


def colour_set(n: int = 4000, seed: int = 0) -> ImageSet:
    """Random 3-channel 8x8 images whose channels have different means and spreads."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1)
    return ImageSet("colour", x, torch.randint(0, 10, (n,), generator=g), 10)


@pytest.fixture(scope="module")
def small_digits() -> tuple[ImageSet, ImageSet]:
    train_set, val_set = load_images("digits", n_train=300, n_val=100, seed=1)
    return mdata.downscale(train_set), mdata.downscale(val_set)


# ------------------------------------------------------------------ data ----


def indexed_set(n: int) -> ImageSet:
    """Image i is filled with the value i: which examples a split took can be read off its images."""
    return ImageSet("indexed", torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
                    torch.arange(n) % 10, 10)


def test_split_is_disjoint_random_and_seeded():
    train_set, val_set = split(indexed_set(100), 70, 20, seed=3)
    taken_train, taken_val = train_set.x[:, 0, 0, 0].long(), val_set.x[:, 0, 0, 0].long()
    assert (len(train_set), len(val_set)) == (70, 20)
    assert len(set(taken_train.tolist()) | set(taken_val.tolist())) == 90  # no example in both
    assert torch.equal(train_set.y, taken_train % 10) and torch.equal(val_set.y, taken_val % 10)  # labels follow their images
    assert taken_train.tolist() != list(range(70))  # a random split, not the first 70
    again = split(indexed_set(100), 70, 20, seed=3)[0]
    assert torch.equal(again.x, train_set.x) and not torch.equal(split(indexed_set(100), 70, 20, seed=4)[0].x, train_set.x)
    with pytest.raises(ValueError):
        split(indexed_set(10), 8, 3)


def test_load_images_digits_split_is_disjoint_and_seeded():
    train_set, val_set = load_images("digits", seed=3)
    assert len(train_set) + len(val_set) == 1797 and len(val_set) == 1797 // 5
    assert train_set.x.shape[1:] == (1, 28, 28) and train_set.x.dtype == torch.float32
    assert 0.0 <= float(train_set.x.min()) and float(train_set.x.max()) <= 1.0
    # every image of the source once: the two parts together are the source, image for image
    source = mdata.from_source(load_digits_source())
    together = torch.cat([train_set.x, val_set.x]).flatten(1)
    assert torch.allclose(together.sum(dim=0), source.x.flatten(1).sum(dim=0), atol=1e-3)
    assert torch.equal(torch.bincount(torch.cat([train_set.y, val_set.y])), torch.bincount(source.y))
    assert train_set.fingerprint == load_images("digits", seed=3)[0].fingerprint
    assert train_set.fingerprint != load_images("digits", seed=4)[0].fingerprint


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST test split not present")
def test_load_images_mnist():
    train_set, val_set = load_images("mnist", SHARED_MNIST, n_train=1000, n_val=500)
    assert (len(train_set), len(val_set)) == (1000, 500) and train_set.classes == 10


def test_load_images_errors():
    with pytest.raises(DataError, match="unknown image set"):
        load_images("svhn")
    with pytest.raises(DataError, match="needs a data directory"):
        load_images("cifar10")


def test_rand_x_fraction_statistics_and_seed():
    clean = colour_set()
    noisy, mask = rand_x(clean, 0.25, seed=7)
    assert int(mask.sum()) == 1000  # exactly round(0.25 * 4000)
    assert torch.equal(noisy.x[~mask], clean.x[~mask]) and torch.equal(noisy.y, clean.y)
    noise = noisy.x[mask]
    # global per-channel statistics of the clean training set
    for c in range(3):
        assert float(noise[:, c].mean()) == pytest.approx(float(clean.x[:, c].mean()), abs=0.005)
        assert float(noise[:, c].std()) == pytest.approx(float(clean.x[:, c].std()), rel=0.02)
    # i.i.d. pixels: no per-pixel structure (neighbouring pixels uncorrelated)
    flat = noise[:, 2].flatten(1)
    corr = torch.corrcoef(torch.stack([flat[:, 0], flat[:, 1]]))[0, 1]
    assert abs(float(corr)) < 0.1
    again, mask2 = rand_x(clean, 0.25, seed=7)
    assert torch.equal(again.x, noisy.x) and torch.equal(mask2, mask)
    other, mask3 = rand_x(clean, 0.25, seed=8)
    assert not torch.equal(mask3, mask) and not torch.equal(other.x, noisy.x)
    assert noisy.fingerprint != clean.fingerprint


def test_rand_x_uses_global_not_per_pixel_statistics():
    """Clean images share a strong per-pixel pattern (a ramp, little spread at each pixel): noise must not carry it."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.0, 1.0, 64).view(1, 1, 8, 8)
    clean = ImageSet("ramp", (ramp + 0.01 * torch.randn(3000, 1, 8, 8, generator=g)), torch.zeros(3000, dtype=torch.long), 10)
    noise = rand_x(clean, 1.0, seed=1)[0].x
    pixel_mean, pixel_std = noise.mean(dim=0).flatten(), noise.std(dim=0).flatten()
    assert float(torch.corrcoef(torch.stack([pixel_mean, ramp.flatten()]))[0, 1]).__abs__() < 0.2  # no ramp in the noise
    assert torch.allclose(pixel_mean, torch.full_like(pixel_mean, float(clean.x.mean())), atol=0.05)
    assert torch.allclose(pixel_std, torch.full_like(pixel_std, float(clean.x.std())), rtol=0.1)  # the global spread (~0.29), not 0.01


def test_rand_y_fraction_uniform_over_all_classes():
    clean = colour_set(20000)
    noisy, mask = rand_y(clean, 0.6, seed=2)
    assert int(mask.sum()) == 12000
    assert torch.equal(noisy.x, clean.x) and torch.equal(noisy.y[~mask], clean.y[~mask])
    redrawn = noisy.y[mask]
    counts = torch.bincount(redrawn, minlength=10).float()
    assert float(counts.min()) > 1000 and float(counts.max()) < 1400  # uniform: 1200 each
    kept = float((redrawn == clean.y[mask]).float().mean())
    assert kept == pytest.approx(0.1, abs=0.015)  # drawn over ALL classes, so ~1/10 stay correct
    assert torch.equal(rand_y(clean, 0.6, seed=2)[0].y, noisy.y)
    assert int(rand_y(clean, 0.0, seed=2)[1].sum()) == 0 and int(rand_y(clean, 1.0, seed=2)[1].sum()) == 20000


def test_noise_leaves_validation_untouched():
    train_set, val_set = load_images("digits", n_train=500, n_val=200, seed=0)
    before = val_set.fingerprint
    rand_x(train_set, 1.0, seed=0)
    rand_y(train_set, 1.0, seed=0)
    assert val_set.fingerprint == before
    with pytest.raises(ValueError):
        rand_x(train_set, 1.5, seed=0)


def test_one_class_per_example():
    train_set = colour_set(50)
    unique = one_class_per_example(train_set)
    assert unique.classes == 50 and torch.equal(unique.y, torch.arange(50))


# -------------------------------------------------------------- CIFAR-10 ----


def write_batch(path: Path, n: int, seed: int, keys=(b"data", b"labels"), shape=None) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=shape or (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    payload = {keys[0]: images, keys[1]: labels, b"batch_label": b"fake", b"filenames": [b"x.png"] * n}
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return images, labels


def fake_cifar(directory: Path, n: int = 12) -> dict[str, tuple[np.ndarray, list[int]]]:
    directory.mkdir(parents=True, exist_ok=True)
    return {name: write_batch(directory / name, n, i) for i, name in enumerate(mdata.CIFAR10_FILES)}


def test_cifar10_loader_reads_the_python_batches(tmp_path):
    written = fake_cifar(tmp_path)
    train_set, test_set = load_cifar10(tmp_path)
    assert train_set.x.shape == (60, 3, 32, 32) and test_set.x.shape == (12, 3, 32, 32)
    images, labels = written["data_batch_2"]
    # row layout: 1024 red, then green, then blue values, each row-major 32x32
    assert float(train_set.x[12, 1, 0, 5]) == pytest.approx(images[0, 1024 + 5] / 255.0)
    assert float(train_set.x[13, 2, 3, 4]) == pytest.approx(images[1, 2048 + 3 * 32 + 4] / 255.0)
    assert train_set.y[12:24].tolist() == labels
    assert test_set.y.tolist() == written["test_batch"][1]
    # the archive's nested folder works too, and load_images subsamples with a seed
    fake_cifar(tmp_path / "nested" / "cifar-10-batches-py")
    train2, val2 = load_images("cifar10", tmp_path / "nested", n_train=50, n_val=10, seed=1)
    assert (len(train2), len(val2)) == (50, 10) and train2.x.shape[1:] == (3, 32, 32)


def one_line_error(directory: Path, match: str) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_cifar10(directory)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_cifar10_loader_bad_files(tmp_path):
    one_line_error(tmp_path / "absent", "data directory not found")
    fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    assert "data_batch_3" in one_line_error(tmp_path, "data file not found")
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02garbage that is not a pickle")
    assert "data_batch_3" in one_line_error(tmp_path, "corrupt data file")
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    one_line_error(tmp_path, "expected a pickled dict")
    write_batch(tmp_path / "data_batch_3", 12, 0, keys=(b"pixels", b"labels"))
    one_line_error(tmp_path, "missing key data")
    write_batch(tmp_path / "data_batch_3", 12, 0, shape=(12, 1024))
    one_line_error(tmp_path, r"expected uint8 data of shape \(N, 3072\)")
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}, protocol=2))
    one_line_error(tmp_path, "unexpected pickled object")  # no foreign code is run while loading


# ---------------------------------------------------------------- models ----


def test_model_output_shapes():
    cnn = small_cnn((3, 32, 32), 10).eval()
    assert cnn(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert small_cnn((1, 28, 28), 7).eval()(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    net = mlp(784, 32, 10)
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert sum(isinstance(m, nn.Linear) for m in net) == 3  # 2 hidden layers + output


def test_model_regularizers_act_in_train_mode_only_and_seed_fixes_weights():
    net = mlp(16, 8, 3, input_noise=1.0, hidden_noise=0.3, dropout=0.5, input_dropout=0.2, seed=4)
    assert sum(isinstance(m, GaussianNoise) for m in net) == 3 and sum(isinstance(m, nn.Dropout) for m in net) == 3
    x = torch.rand(4, 16)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))
    same = mlp(16, 8, 3, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(same.parameters(), mlp(16, 8, 3, seed=4).parameters()))
    assert not torch.equal(same[1].weight, mlp(16, 8, 3, seed=5)[1].weight)


# ------------------------------------------------------------------ LASS ----


def linear_two_class(dim: int = 4) -> nn.Linear:
    """Logits (s, -s) with s = sum(x) - dim/2: class 0 iff the mean pixel exceeds 0.5."""
    model = nn.Linear(dim, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.ones(dim), -torch.ones(dim)]))
        model.bias.copy_(torch.tensor([-dim / 2, dim / 2]))
    return model


def test_lass_finds_the_known_adversarial_point_on_a_linear_model():
    model = linear_two_class()
    # x = 0.5 + u in every pixel: margin 8u in the logit difference; a step moves each pixel by 0.1
    u = torch.tensor([0.05, 0.12, 0.29, 0.34, 0.40, -0.12])
    x = (0.5 + u)[:, None].expand(-1, 4).clone()
    x_hat, critical = lass(model, x, alpha=0.1, beta=0.0, radius=0.35, max_iter=100, min_new=0)
    # flips after 1, 2, 3 steps; after 4 (the 4th step stops at the box edge 0.35); never (needs > 0.35)
    assert critical.tolist() == [True, True, True, True, False, True]
    expected_shift = torch.tensor([-0.1, -0.2, -0.3, -0.35, -0.35, 0.2])
    assert torch.allclose(x_hat - x, expected_shift[:, None].expand(-1, 4), atol=1e-6)
    # a flipped point is not moved further: the 1-step point stays where it flipped although others searched on
    assert torch.allclose(x_hat[0], x[0] - 0.1, atol=1e-7)


def test_lass_defaults_are_the_papers_on_the_0_255_scale():
    """alpha 0.25, beta 0.2, r 0.3 of a 0-255 pixel, at most 100 iterations, stop under 20 new critical points."""
    assert (ALPHA * 255, BETA * 255, RADIUS * 255, MAX_ITER, MIN_NEW) == pytest.approx((0.25, 0.2, 0.3, 100, 20))
    dim = 784
    model = linear_two_class(dim)
    # margins as a fraction of the true radius: inside the box (critical) for 0.5 r and 0.9 r, outside for 3 r and 50 r
    margins = torch.tensor([0.5, 0.9, 3.0, 50.0]).repeat_interleave(10) * (0.3 / 255)
    x = (0.5 + margins)[:, None].expand(-1, dim).clone()
    x_hat, critical = lass(model, x, generator=torch.Generator().manual_seed(0), min_new=0)
    assert critical.tolist() == [True] * 20 + [False] * 20
    assert float((x_hat - x).abs().max()) <= 0.3 / 255 + 1e-7
    # one step moves every pixel by alpha against the gradient (no noise) ...
    one, _ = lass(model, x[20:], max_iter=1, beta=0.0)
    assert torch.allclose(one - x[20:], torch.full_like(one, -0.25 / 255))
    # ... and by noise of std beta (no gradient step, a box wide enough not to cut it)
    noisy, _ = lass(model, x[20:], max_iter=1, alpha=0.0, radius=1.0, generator=torch.Generator().manual_seed(0))
    assert float((noisy - x[20:]).std()) == pytest.approx(0.2 / 255, rel=0.05)


def test_lass_stops_when_an_iteration_finds_too_few_new_critical_points():
    model = linear_two_class()
    # 25 points flip at step 1, 5 at step 2, 30 at step 3 (steps of 0.1, margins 0.05, 0.15, 0.25)
    u = torch.cat([torch.full((25,), 0.05), torch.full((5,), 0.15), torch.full((30,), 0.25)])
    x = (0.5 + u)[:, None].expand(-1, 4).clone()
    _, early = lass(model, x, alpha=0.1, beta=0.0, radius=1.0)  # default min_new 20: step 2 finds 5 < 20, stop
    assert int(early.sum()) == 30 and early[:30].all()
    _, full = lass(model, x, alpha=0.1, beta=0.0, radius=1.0, min_new=0)
    assert int(full.sum()) == 60
    _, first = lass(model, x[25:], alpha=0.1, beta=0.0, radius=1.0)  # step 1 finds none: stop at once
    assert int(first.sum()) == 0
    assert int(lass(model, x[25:], alpha=0.1, beta=0.0, radius=1.0, min_new=5)[1].sum()) == 0
    assert int(lass(model, x, alpha=0.1, beta=0.0, radius=1.0, min_new=5)[1].sum()) == 60  # 25, 5, 30 new: each >= 5
    # the count is over the whole set, whatever the chunks it is pushed through
    assert int(lass(model, x, alpha=0.1, beta=0.0, radius=1.0, batch_size=7)[1].sum()) == 30


def test_lass_box_never_leaves_the_r_box_for_inputs_outside_the_pixel_range():
    """randX inputs lie outside [0, 1]: clamping the box to [0, 1] would put x_hat at 1.0 for x = 1.5 (0.5 > r away)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(200, 1, 4, 4) * 0.8 + 0.5  # about a quarter of the pixels outside [0, 1]
    radius = 0.05
    for pixel_range in (None, (0.0, 1.0)):
        x_hat, _ = lass(model, x, alpha=0.02, beta=0.02, radius=radius, pixel_range=pixel_range, min_new=0,
                        generator=torch.Generator().manual_seed(1))
        assert float((x_hat - x).abs().max()) <= radius + 1e-6
    outside = (x > 1.0) | (x < 0.0)
    inside = ~outside
    # with the pixel range, a pixel in range stays in range; one outside moves only towards it (never further out)
    assert float(x_hat[inside].min()) >= 0.0 and float(x_hat[inside].max()) <= 1.0
    assert bool(((x_hat - x)[x > 1.0] <= 1e-7).all()) and bool(((x_hat - x)[x < 0.0] >= -1e-7).all())
    lower, upper = lass_module.box(torch.tensor([1.5, -0.2, 0.0, 0.5]), 0.1, (0.0, 1.0))
    assert torch.allclose(lower, torch.tensor([1.4, -0.2, 0.0, 0.4])) and torch.allclose(upper, torch.tensor([1.5, -0.1, 0.1, 0.6]))


def test_lass_does_not_clip_to_the_pixel_range_by_default():
    """The reference (lass_tf.py) clips to (-inf, inf): a 0-valued pixel may go below 0 within the box."""
    model = linear_two_class()
    with torch.no_grad():
        model.bias.copy_(torch.tensor([1.0, -1.0]))  # class 0 iff sum(x) > -1: at x = 0 the search pushes every pixel down
    x = torch.zeros(1, 4)
    x_hat, _ = lass(model, x, alpha=0.01, beta=0.0, radius=0.05, max_iter=3, min_new=0)
    assert torch.allclose(x_hat, torch.full((1, 4), -0.03))
    clipped, _ = lass(model, x, alpha=0.01, beta=0.0, radius=0.05, max_iter=3, min_new=0, pixel_range=(0.0, 1.0))
    assert torch.equal(clipped, torch.zeros(1, 4))


def test_lass_stays_in_the_box_and_pixel_range():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(64, 1, 8, 8)
    x[:8] = 0.0  # at the edge of the pixel range
    x[8:16] = 1.0
    radius = 0.05
    x_hat, critical = lass(model, x, alpha=0.02, beta=0.03, radius=radius, pixel_range=(0.0, 1.0), min_new=0,
                           generator=torch.Generator().manual_seed(1))
    assert float((x_hat - x).abs().max()) <= radius + 1e-6
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0
    with torch.no_grad():
        flipped = model(x_hat).argmax(1) != model(x).argmax(1)
    assert torch.equal(flipped, critical)
    again = lass(model, x, alpha=0.02, beta=0.03, radius=radius, pixel_range=(0.0, 1.0), min_new=0,
                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], x_hat)


def test_lass_noise_is_drawn_per_element():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))  # zero weights: the prediction never changes
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))
    x = torch.zeros(50, 1, 4, 4)
    x_hat, critical = lass(model, x, alpha=0.0, beta=0.01, radius=1.0, max_iter=1, pixel_range=None,
                           generator=torch.Generator().manual_seed(0))
    step = (x_hat - x).flatten()
    assert not critical.any()
    assert len(torch.unique(step)) == len(step)  # one draw per element, not per batch or per example
    assert bool((x_hat.flatten(1).std(dim=1) > 0).all())
    assert float(step.std()) == pytest.approx(0.01, rel=0.1)


def test_lass_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.9), nn.Linear(8, 3))
    x = torch.rand(32, 1, 4, 4)
    model.train()
    stats = model[2].running_mean.clone()
    # no step at all: a point can only look critical if dropout / batch statistics changed its prediction
    _, critical = lass(model, x, alpha=0.0, beta=0.0, radius=0.1, max_iter=5, min_new=0)
    assert not critical.any()
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[2].running_mean, stats)
    model.eval()
    lass(model, x, max_iter=2)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_critical_sample_ratio_and_adversarial_loss():
    model = linear_two_class()
    u = torch.tensor([0.01, 0.02, 0.3, 0.4])
    x = (0.5 + u)[:, None].expand(-1, 4).clone()
    assert critical_sample_ratio(model, x, alpha=0.1, beta=0.0, radius=0.05, min_new=0) == 0.5
    y = torch.zeros(4, dtype=torch.long)
    clean = F.cross_entropy(model(x), y)
    assert torch.equal(adversarial_loss(model, x, y, weight=0.0)[0], clean)
    mixed, found = adversarial_loss(model, x, y, weight=0.5, alpha=0.1, beta=0.0, radius=0.05, min_new=0)
    assert found == 2
    x_adv = x[:2] - 0.05
    expected = 0.5 * clean + 0.5 * F.cross_entropy(model(x_adv), y[:2])
    assert mixed.detach().item() == pytest.approx(expected.detach().item(), rel=1e-5)
    mixed.backward()
    assert model.weight.grad is not None


# ------------------------------------------------------- loss-sensitivity ----


def tiny_problem():
    torch.manual_seed(3)
    model = mlp(3, 4, 3, seed=2).double()
    x = torch.rand(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]), torch.tensor([1, 4])]
    return model, x, y, batches, 0.5


def plain_sgd_loss(model, x_train, y, batches, lr, probe) -> float:
    """Reference: L_T by ordinary torch.optim.SGD on a copy of the model."""
    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for index in batches:
        opt.zero_grad()
        F.cross_entropy(net(x_train[index]), y[index]).backward()
        opt.step()
    with torch.no_grad():
        return float(F.cross_entropy(net(probe[0]), probe[1]))


def test_unrolled_loss_sensitivity_matches_finite_differences():
    model, x, y, batches, lr = tiny_problem()
    grad = unrolled_gradient(model, x, y, batches, lr)
    eps = 1e-6
    numeric = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            plus, minus = x.clone(), x.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            numeric[i, j] = (plain_sgd_loss(model, plus, y, batches, lr, (x, y))
                             - plain_sgd_loss(model, minus, y, batches, lr, (x, y))) / (2 * eps)
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    assert float(grad.abs().sum()) > 0
    # the unrolled trajectory is ordinary SGD, and the model itself is left as it was
    before = [p.clone() for p in model.parameters()]
    final = unroll(model, x, y, batches, lr)[-1]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    unrolled_loss = F.cross_entropy(torch.func.functional_call(model, final, (x,)), y).item()
    assert unrolled_loss == pytest.approx(plain_sgd_loss(model, x, y, batches, lr, (x, y)), rel=1e-10)


def test_unrolled_sensitivity_per_step_and_per_class():
    model, x, y, batches, lr = tiny_problem()
    g = unrolled_sensitivity(model, x, y, batches, lr)
    assert g.shape == (4, 6)
    assert torch.equal(g[0, 2:], torch.zeros(4))  # after step 1 only examples 0 and 1 have influenced theta
    assert bool((g[0, :2] > 0).all())
    assert torch.allclose(g[-1], unrolled_gradient(model, x, y, batches, lr).abs().sum(dim=1))
    per_class = unrolled_sensitivity(model, x, y, batches, lr, steps=[2, 4], classes=3)
    assert per_class.shape == (2, 3, 6)
    probe_x, probe_y = x[y == 1], y[y == 1]  # class 1's term alone, scaled by its share of the probe set
    only_1 = unrolled_sensitivity(model, x, y, batches, lr, steps=[4], probe=(probe_x, probe_y))
    assert torch.allclose(per_class[1, 1], only_1[0] * len(probe_y) / len(y))
    l2 = unrolled_sensitivity(model, x, y, batches, lr, steps=[4], norm=2)
    assert torch.allclose(l2[0], unrolled_gradient(model, x, y, batches, lr).norm(dim=1))
    assert sum(len(b) for b in sgd_batches(10, 3, 2, seed=0)) == 20


@pytest.mark.parametrize("classes", [None, 3])
def test_unrolled_sensitivity_block_equals_each_run_alone(classes):
    torch.manual_seed(0)
    x, y = torch.rand(12, 5), torch.arange(12) % 3
    seeds = [4, 9]
    orders = [sgd_batches(12, 4, 2, seed=s)[:5] for s in seeds]
    batches = [torch.stack(step) for step in zip(*orders)]
    g, by_class = unrolled_sensitivity_block(init_block(5, 6, 3, 2, seeds), x, y, batches, 0.3, steps=[3, 5], classes=classes)
    assert g.shape == (2, 2, 12) and (by_class is None) == (classes is None)
    for k, seed in enumerate(seeds):
        alone = unrolled_sensitivity(mlp(5, 6, 3, seed=seed), x, y, orders[k], 0.3, steps=[3, 5])
        assert torch.allclose(g[k], alone, rtol=1e-4, atol=1e-7)
        if classes:
            per_class = unrolled_sensitivity(mlp(5, 6, 3, seed=seed), x, y, orders[k], 0.3, steps=[3, 5], classes=classes)
            assert torch.allclose(by_class[k], per_class, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(g[0], g[1])


def test_gini_of_known_vectors():
    assert gini(torch.ones(10)) == pytest.approx(0.0)
    assert gini(torch.full((7,), 3.5)) == pytest.approx(0.0)
    assert gini(torch.nn.functional.one_hot(torch.tensor(3), 10)) == pytest.approx(0.9)  # (n-1)/n
    assert gini(torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.25)
    assert gini(torch.tensor([2.0, 4.0, 6.0, 8.0])) == pytest.approx(0.25)  # scale-free
    assert gini(torch.zeros(5)) == 0.0
    with pytest.raises(ValueError):
        gini(torch.tensor([1.0, -1.0]))


def test_per_class_matrix_rows_are_loss_classes_columns_example_classes():
    g = torch.tensor([[1.0, 3.0, 10.0], [2.0, 4.0, 20.0]])  # (loss class i, example)
    labels = torch.tensor([0, 0, 1])
    m = per_class_matrix(g, labels, 2)
    assert torch.allclose(m, torch.tensor([[2.0, 10.0], [3.0, 20.0]]))
    assert torch.allclose(per_class_matrix(torch.stack([g, 3 * g]), labels, 2), 2 * m)


# -------------------------------------------------------------- training ----


def test_train_reports_epochs_and_is_reproducible(small_digits):
    train_set, val_set = small_digits
    state = torch.random.get_rng_state()
    rows = []
    history = train(mlp(196, 32, 10, seed=0), train_set, val_set, epochs=2, batch_size=32, lr=0.1,
                    seed=5, csr_examples=20, on_epoch=rows.append)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert rows == history and [r["epoch"] for r in history] == [1, 2]
    assert set(history[0]) == {"epoch", "lr", "train_acc", "train_loss", "val_acc", "val_loss", "csr"}
    assert 0.0 <= history[-1]["csr"] <= 1.0 and history[1]["train_loss"] < history[0]["train_loss"]
    again = train(mlp(196, 32, 10, seed=0), train_set, val_set, epochs=2, batch_size=32, lr=0.1, seed=5, csr_examples=20)
    assert again == history
    assert epochs_to_fit([{"epoch": 1, "train_acc": 0.9}, {"epoch": 2, "train_acc": 1.0}]) == 2
    assert epochs_to_fit(history[:1] and [{"epoch": 1, "train_acc": 0.5}]) is None


def test_train_cnn_with_regularizers_and_step_schedule():
    g = torch.Generator().manual_seed(0)
    images = ImageSet("tiny", torch.rand(8, 3, 12, 12, generator=g), torch.randint(0, 3, (8,), generator=g), 3)
    model = small_cnn((3, 12, 12), 3, dropout=0.2, hidden_noise=0.1, input_noise=0.1, input_dropout=0.1, seed=0)
    history = train(model, images, images, epochs=3, batch_size=4, momentum=0.9, lr_step=2, lr_gamma=0.5,
                    weight_decay=1e-4, seed=0)
    assert [r["lr"] for r in history] == [0.01, 0.01, 0.005]


def test_train_with_adversarial_training(small_digits):
    """The adversarial term is in the training loss: train() equals a plain loop over adversarial_loss, and differs from
    training without it."""
    train_set, val_set = small_digits
    settings = dict(epochs=1, batch_size=50, lr=0.1, seed=0)
    trained = mlp(196, 16, 10, seed=0)
    history = train(trained, train_set, val_set, adversarial_weight=0.5, lass_min_new=0, lass_iters=3, **settings)
    reference = mlp(196, 16, 10, seed=0)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    order = torch.Generator().manual_seed(stream_seed(0, "order"))
    search = torch.Generator().manual_seed(stream_seed(0, "lass"))
    for index in epoch_batches(len(train_set), 50, order):
        loss, _ = adversarial_loss(reference, train_set.x[index], train_set.y[index], weight=0.5, generator=search, min_new=0, max_iter=3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(trained.parameters(), reference.parameters()))
    plain = train(mlp(196, 16, 10, seed=0), train_set, val_set, **settings)
    assert plain[0]["train_loss"] != pytest.approx(history[0]["train_loss"], abs=1e-4)
    assert 0 < history[0]["adv_critical"] <= 1 and "adv_critical" not in plain[0]


def near_boundary(n: int, margin: float = 1e-5) -> ImageSet:
    """n 4x4 images on the boundary of linear_two_class(16) (critical for a box of 0.3/255); image i is told by its value."""
    values = 0.5 + margin * torch.arange(1, n + 1, dtype=torch.float32)
    return ImageSet("near", values.view(n, 1, 1, 1).expand(n, 1, 4, 4).clone(), torch.zeros(n, dtype=torch.long), 2)


def test_csr_is_measured_on_validation_points():
    far = ImageSet("far", torch.full((40, 1, 4, 4), 0.9), torch.zeros(40, dtype=torch.long), 2)  # no point near the boundary
    frozen = lambda: nn.Sequential(nn.Flatten(), linear_two_class(16))  # lr 0: the model never changes
    history = train(frozen(), far, near_boundary(40), epochs=2, batch_size=10, lr=0.0, csr_examples=30, seed=0)
    assert [r["csr"] for r in history] == [1.0, 1.0]
    swapped = train(frozen(), near_boundary(40), far, epochs=1, batch_size=10, lr=0.0, csr_examples=30, seed=0)
    assert swapped[0]["csr"] == 0.0
    with pytest.raises(ValueError, match="csr_examples"):
        train(frozen(), far, near_boundary(40), epochs=1, batch_size=10, lr=0.0, csr_examples=41)


def test_csr_draws_fresh_validation_points_every_epoch(monkeypatch):
    seen = []
    measure = train_module.critical_sample_ratio

    def spy(model, x, **settings):
        seen.append(tuple(sorted(torch.round((x[:, 0, 0, 0] - 0.5) / 1e-5).long().tolist())))
        return measure(model, x, **settings)

    monkeypatch.setattr(train_module, "critical_sample_ratio", spy)
    far = ImageSet("far", torch.full((40, 1, 4, 4), 0.9), torch.zeros(40, dtype=torch.long), 2)
    frozen = lambda: nn.Sequential(nn.Flatten(), linear_two_class(16))
    train(frozen(), far, near_boundary(40), epochs=3, batch_size=10, lr=0.0, csr_examples=25, seed=0)
    first = list(seen)
    assert all(len(set(draw)) == 25 and set(draw) <= set(range(1, 41)) for draw in first)  # 25 distinct validation points
    assert len(set(first)) == 3 and first[0] != tuple(range(1, 26))  # a new random draw each epoch, not the first 25
    seen.clear()
    train(frozen(), far, near_boundary(40), epochs=3, batch_size=10, lr=0.0, csr_examples=25, seed=0)
    assert seen == first  # seeded
    seen.clear()
    train(frozen(), far, near_boundary(40), epochs=1, batch_size=10, lr=0.0, csr_examples=25, seed=1)
    assert seen[0] != first[0]


def test_the_seed_changes_the_data_order(small_digits):
    train_set, val_set = small_digits
    assert stream_seed(1, "order") != stream_seed(2, "order") and stream_seed(1, "order") != stream_seed(1, "lass")
    g1, g2 = (torch.Generator().manual_seed(stream_seed(s, "order")) for s in (1, 2))
    assert not torch.equal(torch.cat(epoch_batches(100, 10, g1)), torch.cat(epoch_batches(100, 10, g2)))
    # same initial weights, different seeds: only the order of the batches differs, and so does the result
    runs = [train(mlp(196, 16, 10, seed=0), train_set, val_set, epochs=1, batch_size=32, lr=0.1, seed=s) for s in (1, 2)]
    assert runs[0][0]["train_loss"] != pytest.approx(runs[1][0]["train_loss"], abs=1e-5)
    assert not torch.equal(torch.cat(sgd_batches(100, 10, 1, seed=1)), torch.cat(sgd_batches(100, 10, 1, seed=2)))


def test_init_block_is_the_models_initialisation():
    seeds = [3, 8]
    block = init_block(20, 6, 4, 2, seeds)
    for k, seed in enumerate(seeds):
        linears = [m for m in mlp(20, 6, 4, seed=seed) if isinstance(m, nn.Linear)]
        for i, linear in enumerate(linears):
            assert torch.equal(block[2 * i][k], linear.weight.t()) and torch.equal(block[2 * i + 1][k, 0], linear.bias)
        assert torch.equal(mlp_weights(20, 6, 4, 2, seed)[0][0], linears[0].weight)
    assert not torch.equal(block[0][0], block[0][1])


@pytest.mark.parametrize("settings", [dict(epochs=2, batch_size=32, lr=0.05, momentum=0.5, weight_decay=1e-3),
                                      dict(epochs=2, batch_size=32, lr=0.1)], ids=["momentum+decay", "plain SGD (fused)"])
def test_block_of_seeds_equals_separate_runs(small_digits, settings):
    train_set, val_set = small_digits
    seeds = [11, 12, 13]
    block = train_seeds(train_set, val_set, width=16, seeds=seeds, **settings)
    for k, seed in enumerate(seeds):
        model = mlp(196, 16, 10, seed=seed)
        history = train(model, train_set, val_set, seed=seed, **settings)
        for key in ("train_acc", "train_loss", "val_acc", "val_loss"):
            assert [r[key] for r in history] == pytest.approx([r[key][k] for r in block.history], abs=1e-5)
        with torch.no_grad():
            wrong = model.eval()(train_set.x).argmax(1) != train_set.y
        assert torch.equal(wrong, block.wrong[k])
    chunked = train_seeds(train_set, val_set, width=16, seeds=seeds, block_size=2, **settings)
    assert chunked.history[-1]["train_loss"] == pytest.approx(block.history[-1]["train_loss"], abs=1e-6)
    rows = block.per_seed()
    assert [r["seed"] for r in rows] == seeds and rows[0]["width"] == 16


def test_width_grid_and_easy_examples(small_digits):
    train_set, val_set = small_digits
    grid = train_grid(train_set, val_set, widths=[8, 32], seeds=range(4), epochs=1, batch_size=16, lr=0.1)
    assert set(grid) == {8, 32} and grid[32].wrong.shape == (4, len(train_set))
    rate = misclassification_rate(grid[32].wrong)
    assert rate.shape == (len(train_set),) and 0.0 <= float(rate.min()) <= float(rate.max()) <= 1.0
    fit = train_seeds(train_set, train_set, width=64, seeds=[0, 1], epochs=200, batch_size=32, lr=0.05,
                      momentum=0.9, stop_when_fit=True)
    assert all(e is not None for e in fit.epochs_to_fit()) and len(fit.history) == max(fit.epochs_to_fit())
