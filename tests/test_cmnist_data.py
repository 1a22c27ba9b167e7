"""Colored MNIST construction and MNIST-format loading, checked against their definitions."""
import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from core.cmnist.domains import build_cmnist
from core.data import DataError, load_idx_dir, read_idx
from core.cmnist.sources import load_source

from conftest import SHARED_MNIST


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def test_split_sizes_follow_the_reference(synthetic_source):
    domains = build_cmnist(synthetic_source, seed=0)
    # MNIST-sized source: 50,000 training images split even/odd, 10,000 held out.
    assert [len(d.y) for d in domains.train] == [25000, 25000]
    assert len(domains.test[0].y) == 10000
    assert [d.name for d in domains.train + domains.test] == ["train1", "train2", "test"]
    for d in domains.train + domains.test:
        assert d.x.shape[1:] == (2, 14, 14) and d.x.dtype == torch.float32 and d.y.shape == (len(d.y), 1)


def test_label_noise_and_colour_agreement(synthetic_source):
    domains = build_cmnist(synthetic_source, seed=1)
    # Recover each domain's digits: training domains are the even / odd entries of the shuffled first 50,000.
    rng = np.random.default_rng(1)
    perm = rng.permutation(50000)
    digits = [synthetic_source.labels[perm[0::2]], synthetic_source.labels[perm[1::2]], synthetic_source.labels[50000:]]
    for d, dig, e in zip(domains.train + domains.test, digits, (0.2, 0.1, 0.9)):
        y = d.y[:, 0].numpy().astype(int)
        clean = (dig < 5).astype(int)
        n = len(y)
        tol = 4 * np.sqrt(0.25 * 0.75 / n)
        assert abs((y != clean).mean() - 0.25) < tol, d.name
        agree = (d.color.numpy() == y).mean()
        assert abs(agree - (1 - e)) < 4 * np.sqrt(e * (1 - e) / n), d.name


def test_image_goes_to_the_colour_channel_only(synthetic_source):
    domains = build_cmnist(synthetic_source, seed=2)
    d = domains.test[0]
    images = torch.from_numpy(synthetic_source.images[50000:, ::2, ::2].astype(np.float32) / 255.0)
    idx = torch.arange(len(d.y))
    assert torch.equal(d.x[idx, d.color], images)
    assert torch.count_nonzero(d.x[idx, 1 - d.color]) == 0


def test_deterministic_in_seed(digits):
    a, b, c = build_cmnist(digits, 5), build_cmnist(digits, 5), build_cmnist(digits, 6)
    assert torch.equal(a.train[0].x, b.train[0].x) and torch.equal(a.test[0].y, b.test[0].y)
    assert not torch.equal(a.train[0].y, c.train[0].y)


def test_split_adapts_to_small_sources(digits):
    domains = build_cmnist(digits, seed=0)
    n_train = round(len(digits.labels) * 5 / 6)
    assert sum(len(d.y) for d in domains.train) == n_train
    assert len(domains.test[0].y) == len(digits.labels) - n_train


def test_plain_digits_source(digits):
    assert digits.images.shape == (1797, 28, 28) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and set(np.unique(digits.labels)) == set(range(10))


def test_load_source_defaults_to_the_deformed_digits(tmp_path):
    from core.cmnist.sources import deformed_digits_source

    assert load_source(None, 1800).fingerprint == deformed_digits_source(1800).fingerprint
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3))
    assert load_source(tmp_path, 1800).images.shape == (3, 28, 28)


def test_idx_directory_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=False)
    source = load_idx_dir(tmp_path)
    assert np.array_equal(source.images, images) and np.array_equal(source.labels, labels)
    # The training split wins when both are present.
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:6])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:6])
    assert len(load_idx_dir(tmp_path).labels) == 6
    # Files of no known release are described as such, with their split, count and directory.
    assert load_idx_dir(tmp_path).description == (
        f"IDX files (training split (train-*) names; checksums match no known release), 6 images, from {tmp_path.resolve()}")


def test_known_releases_are_named_by_checksum(tmp_path, monkeypatch):
    import core.data as data

    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2))
    digests = {name: hashlib.md5((tmp_path / name).read_bytes()).hexdigest() for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    monkeypatch.setitem(data.KNOWN_RELEASES, "Fashion-MNIST", {**data.FASHION_MNIST_FILES, **digests})
    assert load_idx_dir(tmp_path).description.startswith("Fashion-MNIST test split (t10k-*), 2 images, from ")
    monkeypatch.setitem(data.KNOWN_RELEASES, "Fashion-MNIST", {**digests, "t10k-labels-idx1-ubyte.gz": "0" * 32})
    assert "match no known release" in load_idx_dir(tmp_path).description  # both files must match


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_idx_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="no MNIST-format files"):
        load_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    with pytest.raises(DataError, match="data file not found: .*t10k-labels"):
        load_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read data file"):
        load_idx_dir(tmp_path)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(DataError, match="corrupt data file .*3 data bytes, expected 10"):
        read_idx(bad)
    bad.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST test split not available")
def test_real_mnist_test_split():
    expected = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3", "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
    for name, md5 in expected.items():
        assert hashlib.md5((SHARED_MNIST / name).read_bytes()).hexdigest() == md5
    source = load_idx_dir(SHARED_MNIST)
    assert source.images.shape == (10000, 28, 28) and np.bincount(source.labels).min() > 800
    assert source.description.startswith("MNIST test split (t10k-*), 10,000 images, from ")
    domains = build_cmnist(source, 0)
    assert [len(d.y) for d in domains.train + domains.test] == [4167, 4166, 1667]
