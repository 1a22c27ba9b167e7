"""Image sets for the memorization study: loaders, train/val splits and noise datasets.

An :class:`ImageSet` holds float32 images x (N, C, H, W) with pixels in [0, 1]
(randX noise may leave that range) and int64 labels y (N,). Sources:

- ``digits``: scikit-learn's embedded digits upsampled to 28x28 (no download);
- ``mnist``: an MNIST-format IDX directory (:func:`core.data.load_idx_dir`);
- ``cifar10``: the CIFAR-10 "python version" batches (:func:`load_cifar10`).

Noise datasets follow Zhang et al. (2017) as used in thesis §3.2: :func:`rand_x`
replaces inputs by Gaussian noise, :func:`rand_y` replaces labels by uniform
random labels; both take only the training set, so validation data stays clean.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.data import DataError, ImageSource, load_digits_source, load_idx_dir

__all__ = [
    "ImageSet",
    "from_source",
    "split",
    "subset",
    "downscale",
    "load_images",
    "load_cifar10",
    "download_cifar10",
    "rand_x",
    "rand_y",
    "one_class_per_example",
    "CIFAR10_FILES",
]


@dataclass(frozen=True)
class ImageSet:
    """Images x (N, C, H, W) float32 in [0, 1], labels y (N,) int64 in 0..classes-1."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classes: int
    source: str = ""  # what the images were drawn from, for reports (not part of the fingerprint)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def fingerprint(self) -> str:
        """Short content hash (name:sha1-prefix): names the set in caches and result rows."""
        h = hashlib.sha1()
        h.update(self.x.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.y.detach().cpu().contiguous().numpy().tobytes())
        return f"{self.name}:{h.hexdigest()[:12]}"


def from_source(source: ImageSource, classes: int = 10) -> ImageSet:
    """An :class:`ImageSource` (uint8 (N, 28, 28)) as an ImageSet (N, 1, 28, 28) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(source.images)).float().div_(255.0)[:, None]
    return ImageSet(source.name, x, torch.from_numpy(source.labels.astype(np.int64)), classes, source.description)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def subset(images: ImageSet, index: torch.Tensor, name: str | None = None) -> ImageSet:
    """The examples ``index`` of ``images`` (a new set; tensors are copied by indexing)."""
    return replace(images, name=name or images.name, x=images.x[index], y=images.y[index])


def split(images: ImageSet | ImageSource, n_train: int, n_val: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Disjoint random train and validation sets of n_train and n_val examples (seeded permutation)."""
    if isinstance(images, ImageSource):
        images = from_source(images)
    if n_train < 1 or n_val < 0 or n_train + n_val > len(images):
        raise ValueError(f"cannot split {len(images)} examples into {n_train} train + {n_val} validation")
    order = torch.randperm(len(images), generator=_generator(seed))
    return (
        subset(images, order[:n_train], f"{images.name}/train"),
        subset(images, order[n_train : n_train + n_val], f"{images.name}/val"),
    )


def downscale(images: ImageSet, factor: int = 2) -> ImageSet:
    """Average-pool by ``factor`` (28x28 -> 14x14 for the loss-sensitivity study, thesis Fig 3.3)."""
    return replace(images, name=f"{images.name}/{factor}x", x=F.avg_pool2d(images.x, factor))


# ---------------------------------------------------------------- CIFAR-10 ----

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = CIFAR10_TRAIN + ("test_batch",)

# What a CIFAR-10 batch pickle may reference: numpy arrays and their dtypes (any
# numpy version), nothing else, so that loading a file runs no foreign code.
_PICKLE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected pickled object {module}.{name}")
        # numpy 1.x names these modules numpy.core.*, numpy 2 numpy._core.* (either may have written the file)
        tail = module.split(".core.", 1)[1] if ".core." in module else None
        for candidate in ([f"numpy._core.{tail}", f"numpy.core.{tail}"] if tail else [module]):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve pickled object {module}.{name}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> images uint8 (N, 3, 32, 32), labels int64 (N,); DataError if bad."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc}") from None
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means the file is corrupt
        raise DataError(f"corrupt data file {path}: not a CIFAR-10 batch pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"corrupt data file {path}: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"corrupt data file {path}: missing key {'data' if data is None else 'labels'}")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"corrupt data file {path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"corrupt data file {path}: {labels.dtype} labels of shape {labels.shape} for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"corrupt data file {path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_dir(directory: Path) -> Path:
    """``directory`` itself, or its ``cifar-10-batches-py`` folder as the archive unpacks it."""
    nested = directory / "cifar-10-batches-py"
    return nested if not (directory / "test_batch").exists() and nested.is_dir() else directory


def load_cifar10(directory: str | os.PathLike) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from the "python version" batches: (train = data_batch_1..5, test = test_batch).

    ``directory`` holds the six files (or the archive's ``cifar-10-batches-py``
    folder). A missing or corrupt file raises DataError with a one-line message.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    directory = _cifar_dir(directory)
    parts = {name: _read_batch(directory / name) for name in CIFAR10_FILES}

    def as_set(names: tuple[str, ...], label: str) -> ImageSet:
        images = np.concatenate([parts[n][0] for n in names])
        labels = np.concatenate([parts[n][1] for n in names])
        return ImageSet(f"cifar10/{label}", torch.from_numpy(images).float().div_(255.0), torch.from_numpy(labels), 10,
                        f"CIFAR-10 python batches ({', '.join(names)}) from {directory.resolve()}")

    return as_set(CIFAR10_TRAIN, "train"), as_set(("test_batch",), "test")


def download_cifar10(directory: str | os.PathLike, url: str = CIFAR10_URL) -> Path:
    """Download the CIFAR-10 python archive (md5-checked) and unpack its six batches into ``directory``.

    For users who are online; nothing in the library calls it on its own.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if all((directory / name).is_file() for name in CIFAR10_FILES):
        return directory
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            payload = response.read()
    except OSError as exc:
        raise DataError(f"cannot download {url}: {exc}") from None
    if hashlib.md5(payload).hexdigest() != CIFAR10_MD5:
        raise DataError(f"downloaded {url} has the wrong checksum")
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        for name in CIFAR10_FILES:  # copy the six known members only (no path from the archive is trusted)
            member = archive.extractfile(f"cifar-10-batches-py/{name}")
            if member is None:
                raise DataError(f"downloaded archive lacks cifar-10-batches-py/{name}")
            (directory / name).write_bytes(member.read())
    return directory


def load_images(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """(train, val) for ``name`` in {"digits", "mnist", "cifar10"}.

    digits / mnist: one source split at random (seeded) into disjoint train and
    validation sets; by default 1/5 of the examples are validation, the rest
    training. cifar10: train from data_batch_1..5, validation from test_batch,
    each a seeded random subset when n_train / n_val are given.
    """
    if name == "cifar10":
        if data_dir is None:
            raise DataError("cifar10 needs a data directory with the python-version batches (data_batch_1..5, test_batch)")
        train, test = load_cifar10(data_dir)
        g = _generator(seed)
        train = subset(train, torch.randperm(len(train), generator=g)[: n_train or len(train)])
        val = subset(test, torch.randperm(len(test), generator=g)[: len(test) if n_val is None else n_val], "cifar10/val")
        return train, val
    if name == "digits":
        source = load_digits_source()
    elif name == "mnist":
        if data_dir is None:
            raise DataError("mnist needs a data directory with MNIST-format IDX files")
        source = load_idx_dir(data_dir)
    else:
        raise DataError(f"unknown image set {name!r} (expected digits, mnist or cifar10)")
    n = len(source.labels)
    n_val = n // 5 if n_val is None else n_val
    n_train = n - n_val if n_train is None else n_train
    return split(from_source(source), n_train, n_val, seed)


# ----------------------------------------------------------- noise datasets ----


def _corrupted(n: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of exactly round(fraction * n) examples, chosen uniformly at random."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noise fraction must be in [0, 1], got {fraction}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[: round(fraction * n)]] = True
    return mask


def rand_x(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """randX: replace the inputs of a fraction of training examples by i.i.d. Gaussian noise.

    Exactly round(fraction * N) examples, chosen at random from ``seed``, get
    new inputs; labels are kept. Every pixel of a replaced image is drawn
    independently from N(mean_c, std_c^2), where mean_c and std_c are the
    GLOBAL mean and standard deviation of channel c over all pixels of all
    (clean) training images -- "Gaussian noise matching the real dataset's mean
    and variance" (thesis §3.2; Zhang et al.'s "gaussian" corruption). Global
    rather than per-pixel statistics, because a per-pixel mean would paint the
    average image (e.g. a blurred digit) into every noise input, giving noise
    inputs a shared pattern the study means them not to have. Noise is not
    clipped to [0, 1] (clipping would change its mean and variance).

    Returns the new set and the boolean mask (N,) of replaced examples.
    """
    g = _generator(seed)
    mask = _corrupted(len(train), fraction, g)
    x = train.x.clone()
    mean = train.x.mean(dim=(0, 2, 3), keepdim=True)
    std = train.x.std(dim=(0, 2, 3), keepdim=True)
    shape = (int(mask.sum()),) + tuple(x.shape[1:])
    x[mask] = torch.randn(shape, generator=g) * std[0] + mean[0]
    return replace(train, name=f"{train.name}+randX{fraction:g}s{seed}", x=x), mask


def rand_y(train: ImageSet, fraction: float, seed: int, classes: int | None = None) -> tuple[ImageSet, torch.Tensor]:
    """randY: redraw the labels of a fraction of training examples uniformly over ALL classes.

    Exactly round(fraction * N) examples, chosen at random from ``seed``, get a
    label drawn uniformly from 0..classes-1 (default ``train.classes``), as in
    Zhang et al.'s code (pluskid/fitting-random-labels ``cifar10_data.py``:
    ``np.random.choice(n_classes, ...)``); so about 1/classes of them keep their
    true label. That code picks each example with probability ``fraction``;
    here the count is exact, so a noise level is the same in every run. The
    returned mask (N,) marks the redrawn examples, not only those whose label
    changed (compare labels for that). Inputs are kept.
    """
    classes = train.classes if classes is None else classes
    g = _generator(seed)
    mask = _corrupted(len(train), fraction, g)
    y = train.y.clone()
    y[mask] = torch.randint(0, classes, (int(mask.sum()),), generator=g)
    return replace(train, name=f"{train.name}+randY{fraction:g}s{seed}", y=y, classes=max(classes, train.classes)), mask


def one_class_per_example(train: ImageSet) -> ImageSet:
    """Labels 0..N-1, one class per example (thesis Fig 3.3, right: the net must tell every example apart)."""
    return replace(train, name=f"{train.name}+oneclass", y=torch.arange(len(train)), classes=len(train))
