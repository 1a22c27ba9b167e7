"""DomainBed's Colored and Rotated MNIST (core/domainbed/data.py) against hand-built cases and DomainBed's construction."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from core.data import ImageSource, load_idx_merged
from core.domainbed import data as db
from test_cmnist_data import write_idx


def source(n: int, seed: int = 0) -> ImageSource:
    rng = np.random.RandomState(seed)
    return ImageSource("synthetic", rng.randint(0, 256, (n, 28, 28)).astype(np.uint8), rng.randint(0, 10, n).astype(np.int64))


def test_colored_mnist_equals_domainbed_construction():
    """datasets.py, written out: global torch RNG seeded by the run's seed, randperm, images[i::3], the label flips then
    the colours per environment, the image in channel ``colour`` and the other zeroed, / 255."""
    src, seed = source(600), 1234
    envs = db.environments(db.base_images(src, "ColoredMNIST"), seed, trial_seed=0)
    torch.manual_seed(seed)
    images, labels = torch.tensor(src.images), torch.tensor(src.labels)
    shuffle = torch.randperm(len(images))
    images, labels = images[shuffle], labels[shuffle]
    base = db.base_images(src, "ColoredMNIST")
    for i, e in enumerate([0.1, 0.2, 0.9]):
        im, lab = images[i::3], labels[i::3]
        lab = (lab < 5).float()
        lab = (lab - (torch.rand(len(lab)) < 0.25).float()).abs()
        colors = (lab - (torch.rand(len(lab)) < e).float()).abs()
        x = torch.stack([im, im], dim=1)
        x[torch.arange(len(x)), (1 - colors).long(), :, :] *= 0
        x = x.float().div_(255.0)
        env = envs[i]
        assert torch.equal(env.y, lab.long()) and torch.equal(env.color, colors.long())
        assert torch.equal(db.images_of(base, env, torch.arange(len(env.y))), x)
    assert [e.name for e in envs] == ["+90%", "+80%", "-90%"]


def test_colour_rule_and_noise_rates():
    src = source(30_000, seed=1)
    base = db.base_images(src, "ColoredMNIST")
    envs = db.environments(base, seed=7, trial_seed=0)
    for env, e in zip(envs, (0.1, 0.2, 0.9)):
        n = len(env.y)
        clean = torch.tensor(src.labels)[env.index] < 5
        flip = (env.y != clean.long()).float().mean().item()
        assert abs(flip - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)  # label noise 0.25
        disagree = (env.color != env.y).float().mean().item()
        assert abs(disagree - e) < 4 * math.sqrt(e * (1 - e) / n)  # colour = noisy label xor Bernoulli(e)
        x = db.images_of(base, env, torch.arange(200))
        pixels = torch.tensor(src.images)[env.index[:200]].float() / 255
        picked = x[torch.arange(200), env.color[:200]]
        other = x[torch.arange(200), 1 - env.color[:200]]
        assert torch.equal(picked, pixels) and not other.any()  # the image in its colour's channel, the other zeroed


def test_rotation_of_a_known_image():
    img = np.zeros((28, 28), dtype=np.uint8)
    img[2:6, 20:26] = 255  # a bar in the upper right
    quarter = db.rotate(img, 90)
    assert np.array_equal(quarter, np.rot90(img))  # 90 degrees counter-clockwise: the bar moves to the upper left
    assert quarter[2:8, 2:6].all() and not quarter[:, 14:].any()
    assert np.array_equal(db.rotate(img, 0), img)
    # 15 degrees: bilinear interpolation about the centre (14, 14), pixel centres at i + 0.5, written out here
    noise = np.random.RandomState(0).randint(0, 256, (28, 28)).astype(np.uint8)
    c, s = math.cos(math.radians(15)), math.sin(math.radians(15))
    expected = np.zeros((28, 28))
    for yo in range(28):
        for xo in range(28):
            x, y = xo + 0.5 - 14, yo + 0.5 - 14
            xs, ys = c * x - s * y + 13.5, s * x + c * y + 13.5
            x0, y0 = math.floor(xs), math.floor(ys)
            for xx, yy, w in ((x0, y0, (1 - xs + x0) * (1 - ys + y0)), (x0 + 1, y0, (xs - x0) * (1 - ys + y0)),
                              (x0, y0 + 1, (1 - xs + x0) * (ys - y0)), (x0 + 1, y0 + 1, (xs - x0) * (ys - y0))):
                if 0 <= xx < 28 and 0 <= yy < 28:
                    expected[yo, xo] += w * noise[yy, xx]
    got = db.rotate(noise, 15).astype(float)
    assert np.abs(got - expected)[3:25, 3:25].max() <= 1.0  # uint8 rounding; PIL treats the border on its own


def test_rotated_mnist_environments():
    src = source(60)
    base = db.base_images(src, "RotatedMNIST")
    envs = db.environments(base, seed=3, trial_seed=0)
    assert [e.name for e in envs] == ["0", "15", "30", "45", "60", "75"] and all(len(e.y) == 10 for e in envs)
    for env, angle in zip(envs, db.ANGLES):
        x = db.images_of(base, env, torch.tensor([4]))
        i = int(env.index[4])
        assert x.shape == (1, 1, 28, 28)
        assert torch.equal(x[0, 0], torch.tensor(db.rotate(src.images[i], angle)).float() / 255)
        assert int(env.y[4]) == int(src.labels[i])  # ten classes, no noise


def test_in_out_splits_are_domainbeds():
    """misc.split_dataset(env, int(n * 0.2), seed_hash(trial_seed, env)): the first part is the out-split."""
    src = source(301)
    envs = db.environments(db.base_images(src, "ColoredMNIST"), seed=0, trial_seed=2)
    assert [len(e.index) for e in envs] == [101, 100, 100]  # round robin
    for i, env in enumerate(envs):
        keys = list(range(len(env.index)))
        np.random.RandomState(int(hashlib.md5(str((2, i)).encode()).hexdigest(), 16) % 2**31).shuffle(keys)
        cut = int(len(keys) * 0.2)
        assert env.out_keys.tolist() == keys[:cut] and env.in_keys.tolist() == keys[cut:]
    other = db.environments(db.base_images(src, "ColoredMNIST"), seed=0, trial_seed=3)
    assert other[0].out_keys.tolist() != envs[0].out_keys.tolist()
    assert torch.equal(other[0].index, envs[0].index)  # the trial seed splits; the run's seed shuffles


def test_idx_splits_merged_training_first(tmp_path):
    for split, n, value in (("train", 3, 1), ("t10k", 2, 2)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.full((n, 28, 28), value))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) + 10 * value)
    merged = load_idx_merged(tmp_path)
    assert merged.labels.tolist() == [10, 11, 12, 20, 21] and merged.images[:, 0, 0].tolist() == [1, 1, 1, 2, 2]
    assert "merged" in merged.description and "5 images" in merged.description


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        db.base_images(source(3), "PACS")
