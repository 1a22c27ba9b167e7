"""Data that cannot be right is refused in one line before Ray (an empty IDX file, labels outside 0-9, a preset named
for MNIST without its files); a data set too small to say much runs with a note; a release is known by its content,
gzipped or not."""
from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from pipelines import cli
from test_cmnist_data import write_idx


class RayStarted(Exception):
    """Raised by the stand-in for init_ray: the command got past every check."""


@pytest.fixture
def no_ray(monkeypatch):
    import pipelines.engine.runner as runner

    def stand_in(*args, **kwargs):
        raise RayStarted

    monkeypatch.setattr(runner, "init_ray", stand_in)


def _data(tmp_path, n: int, labels=None):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_idx(data / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(data / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n) if labels is None else labels)
    return data


def _run(tmp_path, data) -> int:
    return cli.main(["run", "cmnist-table", "--results", str(tmp_path / "results"), "--data-dir", str(data)])


def test_an_empty_idx_file_is_refused_naming_it(tmp_path, no_ray, capsys):
    data = _data(tmp_path, 0)
    assert _run(tmp_path, data) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"data file {data / 'train-images-idx3-ubyte.gz'} holds no images" in line


def test_labels_outside_0_to_9_are_refused(tmp_path, no_ray, capsys):
    data = _data(tmp_path, 1200, labels=np.arange(1200) % 12)
    assert _run(tmp_path, data) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "labels outside 0-9 (0..11)" in line and str(data) in line


def test_a_tiny_data_set_runs_with_a_note(tmp_path, no_ray, capsys):
    with pytest.raises(RayStarted):
        _run(tmp_path, _data(tmp_path, 12))
    assert "note: only 12 images" in capsys.readouterr().out


def _pair(directory, payloads: dict, gz: bool) -> None:
    """Write raw IDX ``payloads`` (stem -> bytes) into ``directory``, gzipped or plain."""
    directory.mkdir(parents=True)
    for stem, payload in payloads.items():
        (gzip.open if gz else open)(directory / (f"{stem}.gz" if gz else stem), "wb").write(payload)


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def test_a_release_is_known_by_its_decompressed_content_gzipped_or_not(tmp_path, monkeypatch):
    """Gunzipped MNIST files were 'no known release' (the md5 of the .gz was the only checksum): the same content is now
    the same release, gzipped (recompressed: another md5) or plain, with the same fingerprint."""
    import core.data as data

    rng = np.random.default_rng(1)
    payloads = {"t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (5, 28, 28))), "t10k-labels-idx1-ubyte": _idx(np.arange(5))}
    content = {stem: hashlib.sha256(payload).hexdigest() for stem, payload in payloads.items()}
    monkeypatch.setitem(data.KNOWN_CONTENT, "Test-MNIST", content)
    _pair(tmp_path / "gz" / "digits", payloads, gz=True)
    _pair(tmp_path / "plain" / "digits", payloads, gz=False)
    gz, plain = (data.load_idx_dir(tmp_path / kind / "digits") for kind in ("gz", "plain"))
    assert gz.description.startswith("Test-MNIST test split (t10k-*), 5 images, from ")
    assert plain.description.startswith("Test-MNIST test split (t10k-*), 5 images, from ")
    assert gz.fingerprint == plain.fingerprint  # the sweep id does not depend on the files' compression
    other = {**payloads, "t10k-labels-idx1-ubyte": _idx(np.arange(5)[::-1])}  # one file of another content
    _pair(tmp_path / "other" / "digits", other, gz=False)
    assert "match no known release" in data.load_idx_dir(tmp_path / "other" / "digits").description


def test_the_real_mnist_test_split_is_mnist_gzipped_and_gunzipped(tmp_path):
    from conftest import SHARED_MNIST

    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST test split in {SHARED_MNIST}")
    from core.data import load_idx_dir

    plain = tmp_path / "mnist"
    plain.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (plain / stem).write_bytes(gzip.open(SHARED_MNIST / f"{stem}.gz").read())
    gz, gunzipped = load_idx_dir(SHARED_MNIST), load_idx_dir(plain)
    assert gz.description.startswith("MNIST test split (t10k-*), 10,000 images, from ")
    assert gunzipped.description.startswith("MNIST test split (t10k-*), 10,000 images, from ")
    assert gz.fingerprint == gunzipped.fingerprint  # both directories are named mnist


@pytest.mark.parametrize("preset", ["mnist", "paper"])
def test_domainbeds_mnist_presets_without_data_dir_are_refused(tmp_path, no_ray, capsys, preset):
    """`domainbed --preset mnist` (or paper) without --data-dir swept the embedded digits under a preset for MNIST."""
    assert cli.main(["run", "domainbed", "--preset", preset, "--results", str(tmp_path / "results")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"domainbed's preset {preset} is for real data files, not the embedded stand-in: give --data-dir DIR" in line
    with pytest.raises(RayStarted):  # the smoke preset still runs on the embedded digits
        cli.main(["run", "domainbed", "--preset", "smoke", "--results", str(tmp_path / "results")])
