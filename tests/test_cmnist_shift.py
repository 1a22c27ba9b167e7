"""Covariate-shift CMNIST variants checked against their definitions (core/cmnist/shift.py).

Every image of a domain is traced back to its source index (random images are
unique), so subsample counts are checked exactly and the label-noise and colour
rates against the clean label are checked statistically (5 standard errors).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
import torch

from core.cmnist.domains import LABEL_NOISE, TEST_COLOR_FLIP, TRAIN_COLOR_FLIPS, split_indices
from core.cmnist.shift import VARIANTS, build_shifted_cmnist, domain_proportions, kept_count
from core.data import ImageSource, load_digits_source
from core.cmnist.train import ModelConfig, train_block

SEED = 7
N_SOURCE = 60000
FLIPS = {"train1": TRAIN_COLOR_FLIPS[0], "train2": TRAIN_COLOR_FLIPS[1], "test": TEST_COLOR_FLIP}


@lru_cache(maxsize=1)
def source() -> ImageSource:
    """MNIST-sized random images (pixels 1..255, so every image is non-zero) with uniform digit labels."""
    rng = np.random.default_rng(2024)
    images = rng.integers(1, 256, size=(N_SOURCE, 28, 28), dtype=np.uint8)
    return ImageSource("shift-synthetic", images, rng.integers(0, 10, size=N_SOURCE).astype(np.int64))


@lru_cache(maxsize=1)
def digits_source() -> ImageSource:
    return load_digits_source()


@lru_cache(maxsize=1)
def source_index() -> dict[bytes, int]:
    small = np.ascontiguousarray(source().images[:, ::2, ::2])
    index = {img.tobytes(): i for i, img in enumerate(small)}
    assert len(index) == N_SOURCE
    return index


@lru_cache(maxsize=None)
def build(variant: str, p: float):
    return build_shifted_cmnist(source(), variant, p, SEED)


def pools() -> dict[str, np.ndarray]:
    """Source indices each domain draws from: the standard CMNIST split for SEED."""
    train_idx, test_idx = split_indices(N_SOURCE, np.random.default_rng(SEED))
    return {"train1": train_idx[0::2], "train2": train_idx[1::2], "test": test_idx}


def proportions(p: float) -> dict[str, float]:
    q1, q2 = domain_proportions(p)
    return {"train1": q1, "train2": q2, "test": 0.5}


def traced(domain) -> np.ndarray:
    """The source index of every image in a domain."""
    pixels = (domain.x.sum(dim=1) * 255).round().to(torch.uint8).numpy()
    index = source_index()
    return np.array([index[img.tobytes()] for img in pixels])


def all_domains(domains):
    return domains.train + domains.test


def assert_rate(hits: np.ndarray, expected: float) -> None:
    """Fraction of True in ``hits`` equals ``expected`` within 5 standard errors (exactly at 0 or 1)."""
    n = len(hits)
    assert n > 0
    tol = 5 * math.sqrt(expected * (1 - expected) / n)
    assert abs(hits.mean() - expected) <= tol, (hits.mean(), expected, n)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_shapes_names_dtypes(variant, p):
    domains = build(variant, p)
    assert [d.name for d in domains.train] == ["train1", "train2"]
    assert [d.name for d in domains.test] == ["test"]
    channels = 4 if variant == "color" else 2
    for d in all_domains(domains):
        n = len(d.y)
        assert n > 0
        assert d.x.shape == (n, channels, 14, 14) and d.x.dtype == torch.float32
        assert d.y.shape == (n, 1) and d.y.dtype == torch.float32
        assert set(d.y.unique().tolist()) <= {0.0, 1.0}
        assert d.color.shape == (n,) and set(d.color.unique().tolist()) <= {0, 1}
        assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_class_imbalance_counts(p):
    digits, pool, q = source().labels, pools(), proportions(p)
    for d in all_domains(build("class", p)):
        idx = traced(d)
        assert len(np.unique(idx)) == len(idx) and np.isin(idx, pool[d.name]).all()
        clean0_pool = int((digits[pool[d.name]] >= 5).sum())
        clean1_pool = len(pool[d.name]) - clean0_pool
        assert int((digits[idx] >= 5).sum()) == kept_count(q[d.name], clean0_pool)
        assert int((digits[idx] < 5).sum()) == kept_count(1 - q[d.name], clean1_pool)


def test_class_imbalance_disjoint_at_zero():
    train1, train2 = build("class", 0.0).train
    assert (source().labels[traced(train1)] < 5).all()  # q1 = 0: no clean class 0
    assert (source().labels[traced(train2)] >= 5).all()  # q2 = 1: no clean class 1


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_digit_imbalance_counts(p):
    digits, pool, q = source().labels, pools(), proportions(p)
    for d in all_domains(build("digit", p)):
        idx = traced(d)
        assert np.isin(idx, pool[d.name]).all()
        kept = digits[idx]
        assert not np.isin(kept, [0, 5]).any()
        for group, fraction in (((1, 2), q[d.name]), ((6, 7), q[d.name]), ((3, 4), 1 - q[d.name]), ((8, 9), 1 - q[d.name])):
            available = int(np.isin(digits[pool[d.name]], group).sum())
            assert int(np.isin(kept, group).sum()) == kept_count(fraction, available), (d.name, group)
    if p == 0.0:
        train1, train2 = build("digit", p).train
        assert set(np.unique(digits[traced(train1)])) == {3, 4, 8, 9}
        assert set(np.unique(digits[traced(train2)])) == {1, 2, 6, 7}


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_color_imbalance_shades(p):
    pool, q = pools(), proportions(p)
    for d in all_domains(build("color", p)):
        idx = traced(d)
        assert np.array_equal(np.sort(idx), np.sort(pool[d.name]))  # no subsampling
        nonzero = d.x.flatten(2).ne(0).any(dim=2)  # (N, 4)
        assert torch.equal(nonzero.sum(dim=1), torch.ones(len(d.y), dtype=torch.long))
        channel = nonzero.long().argmax(dim=1)
        assert torch.equal(channel // 2, d.color)
        shade = (channel % 2).numpy()
        color = d.color.numpy()
        assert_rate(shade[color == 0] == 0, q[d.name])
        assert_rate(shade[color == 1] == 1, q[d.name])
        small = torch.from_numpy(np.ascontiguousarray(source().images[idx, ::2, ::2])).float() / 255.0
        assert torch.equal(d.x[torch.arange(len(idx)), channel], small)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_label_noise_and_colour_rates(variant, p):
    digits = source().labels
    flipped = []
    for d in all_domains(build(variant, p)):
        y = d.y[:, 0].numpy().astype(np.int64)
        clean = (digits[traced(d)] < 5).astype(np.int64)
        flipped.append(y != clean)
        assert_rate(d.color.numpy() == y, 1 - FLIPS[d.name])
    assert_rate(np.concatenate(flipped), LABEL_NOISE)


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic_in_seed(variant):
    small = digits_source()
    a, b = build_shifted_cmnist(small, variant, 0.2, 3), build_shifted_cmnist(small, variant, 0.2, 3)
    c = build_shifted_cmnist(small, variant, 0.2, 4)
    for da, db in zip(all_domains(a), all_domains(b)):
        assert torch.equal(da.x, db.x) and torch.equal(da.y, db.y) and torch.equal(da.color, db.color)
    assert any(not torch.equal(da.y, dc.y) for da, dc in zip(all_domains(a), all_domains(c)))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_trains_on_digits_source(variant, p):
    domains = build_shifted_cmnist(digits_source(), variant, p, 0)
    assert all(len(d.y) > 0 for d in all_domains(domains))
    rows = train_block(domains, "erm", [ModelConfig(hidden=16)], steps=3, device=torch.device("cpu"))
    assert len(rows) == 1 and math.isfinite(rows[0]["train_nll"]) and 0.0 <= rows[0]["test_acc"] <= 1.0


def test_domain_builders_dispatch():
    from tasks.cmnist import DOMAIN_BUILDERS, domains_for

    small = digits_source()
    assert {"class", "digit", "color"} <= set(DOMAIN_BUILDERS)
    config = {"source": small.fingerprint, "variant": "color", "shift_p": 0.1, "data_seed": 5}
    domains = domains_for(small, config)
    expected = build_shifted_cmnist(small, "color", 0.1, 5)
    assert domains.train[0].x.shape[1] == 4
    assert torch.equal(domains.train[0].x, expected.train[0].x)
    for variant in ("class", "digit"):
        built = DOMAIN_BUILDERS[variant](small, {**config, "variant": variant, "shift_p": 0.0})
        assert torch.equal(built.test[0].y, build_shifted_cmnist(small, variant, 0.0, 5).test[0].y)


@pytest.mark.parametrize("bad", [("shape", 0.1), ("class", -0.01), ("digit", 0.51), ("color", float("nan"))])
def test_rejects_bad_arguments(bad):
    variant, p = bad
    with pytest.raises(ValueError, match="variant|shift p"):
        build_shifted_cmnist(digits_source(), variant, p, 0)


def test_rejects_empty_domain():
    rng = np.random.default_rng(0)
    only_zeros_and_fives = ImageSource(
        "zeros-fives", rng.integers(1, 256, size=(120, 28, 28), dtype=np.uint8), np.tile([0, 5], 60).astype(np.int64)
    )
    with pytest.raises(ValueError, match="empty"):
        build_shifted_cmnist(only_zeros_and_fives, "digit", 0.3, 0)
