"""Data that cannot be right is refused in one line before Ray (an empty IDX file, labels outside 0-9); a data set
too small to say much runs with a note."""
from __future__ import annotations

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
