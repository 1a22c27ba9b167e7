"""The embedded deformed digits (core.cmnist.sources): seeded, MNIST-shaped, held-out test sources, CMNIST rules."""
import numpy as np
import pytest
import torch

from core.cmnist.domains import build_cmnist
from core.cmnist.shift import build_shifted_cmnist
from core.cmnist.sources import (
    MIN_EMBEDDED_IMAGES, NO_DEFORMATION, deformed_digits, deformed_digits_source, split_sources,
)

N = 6000  # small enough for seconds, large enough for the label / colour statistics


@pytest.fixture(scope="module")
def drawn():
    return deformed_digits(N, seed=0)


@pytest.fixture(scope="module")
def source():
    return deformed_digits_source(N, seed=0)


def test_seeded_and_deterministic(drawn):
    images, labels, origin = drawn
    again = deformed_digits(N, seed=0)
    assert np.array_equal(images, again[0]) and np.array_equal(labels, again[1]) and np.array_equal(origin, again[2])
    other = deformed_digits(N, seed=1)
    assert not np.array_equal(images, other[0])
    assert not np.array_equal(np.sort(origin[5000:]), np.sort(other[2][5000:]))  # the held-out sources follow the seed
    assert deformed_digits_source(N, 0).fingerprint != deformed_digits_source(N, 1).fingerprint


def test_images_in_range_and_shape(drawn):
    from sklearn.datasets import load_digits

    images, labels, origin = drawn
    assert images.shape == (N, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(labels, load_digits().target[origin])
    assert images.max() == 255 and (images.reshape(N, -1).max(axis=1) > 100).all()  # no image drawn blank
    assert np.bincount(origin, minlength=1797).min() >= 3  # every source drawn, about equally often
    assert np.bincount(origin, minlength=1797).max() <= 4


def test_no_deformation_is_the_plain_upsampled_digits(digits):
    images, _, origin = deformed_digits(MIN_EMBEDDED_IMAGES, seed=0, deformation=NO_DEFORMATION)
    # Same pixel centres as core.data.load_digits_source; the 2-pixel border differs (zeros outside vs edge repeat).
    inner = (slice(None), slice(2, 26), slice(2, 26))
    diff = np.abs(images.astype(int) - digits.images[origin].astype(int))[inner]
    assert diff.max() <= 1


def test_deformations_are_mild_but_present(drawn, digits):
    images, _, origin = drawn
    a = images.reshape(N, -1).astype(float)
    b = digits.images[origin].reshape(N, -1).astype(float)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    corr = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    # Pixel correlation with the plain digit: undeformed 0.99 (border only), the default 0.95, rotation ±10°, scale
    # and shear 0.1, shift 1.5 px, elastic 1.5 px 0.88; each image keeps its source's shape but is not a copy of it.
    assert 0.92 < np.median(corr) < 0.975
    assert corr.min() > 0.6


def test_minimum_count_draws_every_source(digits):
    _, _, origin = deformed_digits(MIN_EMBEDDED_IMAGES, deformation=NO_DEFORMATION)
    assert len(np.unique(origin)) == 1797
    with pytest.raises(ValueError, match="at least"):
        deformed_digits(MIN_EMBEDDED_IMAGES - 1)


def test_source_split_is_stratified_and_disjoint(digits):
    train, test = split_sources(digits.labels, np.random.default_rng(0))
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    for digit in range(10):
        n = int((digits.labels == digit).sum())
        assert int((digits.labels[test] == digit).sum()) == n - round(n * 5 / 6)


def _origins_of(domain, source, origin):
    """The source digit of every image of a domain, found by matching its (colour-summed) pixels to the source's."""
    key = lambda rows: [r.tobytes() for r in rows]
    small = (source.images[:, ::2, ::2].astype(np.float32) / 255.0).reshape(len(origin), -1)
    where = {}
    for i, k in enumerate(key(small)):
        where.setdefault(k, set()).add(int(origin[i]))
    gray = domain.x.sum(dim=1).reshape(len(domain.y), -1).numpy()
    return set().union(*(where[k] for k in key(gray)))


def test_train_and_test_domains_share_no_source_digit(source, drawn):
    origin = drawn[2]
    domains = build_cmnist(source, seed=3)
    train = set().union(*(_origins_of(d, source, origin) for d in domains.train))
    test = _origins_of(domains.test[0], source, origin)
    assert len(test) > 250 and len(train) > 1400 and not train & test
    shifted = build_shifted_cmnist(source, "digit", 0.1, seed=3)
    assert not set().union(*(_origins_of(d, source, origin) for d in shifted.train)) & _origins_of(shifted.test[0], source, origin)


@pytest.mark.parametrize("variant", ["class", "digit", "color"])
def test_covariate_shift_variants_build_on_it(source, variant):
    for p in (0.0, 0.5):
        domains = build_shifted_cmnist(source, variant, p, seed=0)
        assert all(len(d.y) > 100 for d in domains.train + domains.test)
    digits = source.labels
    assert all(set(np.unique(part)) == set(range(10)) for part in (digits[:5000], digits[5000:]))  # every class both sides


def test_label_noise_and_colours_follow_cmnist_rules(source, drawn):
    origin = drawn[2]
    rng = np.random.default_rng(4)
    perm = rng.permutation(5000)
    positions = [perm[0::2], perm[1::2], np.arange(5000, N)]
    domains = build_cmnist(source, seed=4)
    for d, pos, e in zip(domains.train + domains.test, positions, (0.2, 0.1, 0.9)):  # colour flips of the IRM code
        y = d.y[:, 0].numpy().astype(int)
        clean = (source.labels[pos] < 5).astype(int)
        n = len(y)
        assert abs((y != clean).mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n), d.name
        assert abs((d.color.numpy() == y).mean() - (1 - e)) < 4 * np.sqrt(e * (1 - e) / n), d.name
        assert torch.equal(d.x.sum(dim=1), torch.from_numpy(source.images[pos, ::2, ::2].astype(np.float32) / 255.0))
        # Each image draws its own noise: copies of one source digit disagree as often as independent draws do.
        flipped = (y != clean)
        by_source = {}
        for o, f in zip(origin[pos], flipped):
            by_source.setdefault(int(o), []).append(f)
        pairs = [(a[0], a[1]) for a in by_source.values() if len(a) >= 2]
        disagree = np.mean([a != b for a, b in pairs])
        assert abs(disagree - 2 * 0.25 * 0.75) < 4 * np.sqrt(0.375 * 0.625 / len(pairs)), d.name


_FINGERPRINTS = """
import sys
from core.cmnist.sources import deformed_digits_source
from core.data import load_digits_source
print(deformed_digits_source(3000, 0).fingerprint, load_digits_source().fingerprint)
"""


def test_embedded_data_is_the_same_on_every_cpu():
    """Generic (no SIMD) kernels give the same images as this CPU's vector kernels (AVX2 / AVX-512): the embedded
    data, and the sweep ids built on its fingerprint, do not depend on the machine (float32 resampling changed 27
    pixels of the 12,000 deformed digits and 40 of scikit-learn's upsampled digits between AVX2 and generic kernels)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runs = [subprocess.run([sys.executable, "-c", _FINGERPRINTS], capture_output=True, text=True, cwd=root, check=True,
                           env={**os.environ, **extra}).stdout for extra in ({}, {"ATEN_CPU_CAPABILITY": "default"})]
    assert runs[0] == runs[1] and runs[0].strip()


def test_upsampled_digits_are_exact_bilinear_resampling():
    """core.data's integer resampling is torch's bilinear interpolation (align_corners=False) without its rounding."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from core.data import load_digits_source, round_half_even, upsample_exact

    images = load_digits().images
    num, den = upsample_exact(images.astype(np.int64), 28)
    torch_values = F.interpolate(torch.tensor(images, dtype=torch.float64)[:, None], size=(28, 28), mode="bilinear",
                                 align_corners=False)[:, 0].numpy()
    assert np.abs(num / den - torch_values).max() < 1e-9
    assert np.array_equal(round_half_even(np.array([1, 3, 5, 7, 6]), 2), [0, 2, 2, 4, 3])  # ties to even
    scaled = load_digits_source().images.astype(int)
    assert np.abs(scaled - torch_values * (255 / 16)).max() <= 0.5 + 1e-9
