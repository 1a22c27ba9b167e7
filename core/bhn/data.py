"""The BHN study's images: seeded splits with a held-out class, and the OOD sets (docs bayes.md §a.2 B4, §b).

- :func:`load_images`: an MNIST-format directory (``core.data.load_idx_merged``: every split there, the training split
  first, so train + t10k is ``mnist.pkl.gz``'s 70,000 in order; t10k alone is the smoke/cpu data), or the embedded
  deformed digits when ``data_dir`` is None; pixels /255 in [0, 1], flattened to (N, 784) as ``mnist.pkl.gz``.
- :func:`make_split`: a seeded partition into train / valid / test by sizes, then, as ``dk_anomaly_detection.py``'s
  ``split_by_exclude`` (``ooc=1``, ``exclude=3``), the excluded class leaves every part, the remaining labels are
  renumbered 0..C−1 in class order, and the excluded images **of the training part** are the held-out OOD set.
- :func:`ood_set`: ``heldout`` (those images); ``uniform`` U(0,1)^784 and ``gaussian`` N(0,1)^784, as many as test
  images, unclipped and not added to images (``noised(Xt, 1.)``; H&G ``np.random.uniform`` / ``normal``);
  ``deformed`` (the embedded deformed scikit-learn digits: another hand, same classes; only when the in-distribution
  is MNIST); ``inverted`` (1 − x of the test images); ``permuted`` (the test images under one seeded pixel permutation).
- Paper sets (``gensweep download NAME DIR``; a missing file raises a one-line :class:`core.data.DataError`):
  ``omniglot`` (H&G's 15 "safe" background alphabets, strokes white on black: 1 − image, resized to 28×28),
  ``notmnist`` (``notMNIST.pickle``'s ``test_dataset``), ``cifar10bw`` (CIFAR-10 ``test_batch`` in grey, 28×28).
  All three are scaled to [0, 1] like MNIST. H&G fed Omniglot at 0..255 (``scipy.misc.imresize`` returns uint8)
  and notMNIST at (x − 128)/255; those scalings are not reproduced.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.data import DataError

OOD_SETS = ("heldout", "uniform", "gaussian", "deformed", "inverted", "permuted")
PAPER_OOD_SETS = ("omniglot", "notmnist", "cifar10bw")
CLASSES = 10
PIXELS = 784
OMNIGLOT_SAFE = (0, 2, 5, 6, 8, 12, 13, 14, 15, 16, 17, 18, 19, 21, 26)  # H&G: alphabets without digit-like characters
DOWNLOADS = {"omniglot": "omniglot", "notmnist": "notmnist", "cifar10bw": "cifar10"}  # `gensweep download` names
GREY = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale


def load_images(data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, 784) in [0, 1], y int64 (N,)): every split of an MNIST-format directory, the training split first
    (with both, 70,000 images in ``mnist.pkl.gz``'s order: its 50k / 10k / 10k are the first 50,000, the next 10,000
    and the test split), or the embedded deformed digits."""
    from core.cmnist.sources import load_source
    from core.data import check_digits, load_idx_merged

    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    source = load_source(None) if data_dir is None else load_idx_merged(data_dir)
    check_digits(source)
    return _flat(source.images), source.labels.astype(np.int64)


def _flat(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images, dtype=np.float32) / 255.0).reshape(len(images), -1)


@dataclass(frozen=True)
class Split:
    """Train / valid / test images (n, 784) and labels renumbered 0..C−1; the held-out class's training images."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_heldout: np.ndarray
    classes: tuple[int, ...]  # the original class of each output unit

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def make_split(x: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int], seed: int, exclude: int | None = 3,
               shuffle: bool = True) -> Split:
    """Partition (a seeded permutation, or the given order when ``shuffle`` is False, as ``mnist.pkl.gz``'s 50k/10k/10k)
    into ``sizes`` = (train, valid, test), then drop class ``exclude`` (None keeps all ten) as ``split_by_exclude``."""
    n_train, n_valid, n_test = sizes
    if min(sizes) < 0 or n_train == 0 or n_test == 0 or sum(sizes) > len(x):
        raise ValueError(f"sizes {sizes} do not fit {len(x)} images (train and test must be non-empty)")
    if exclude is not None and not 0 <= exclude < CLASSES:
        raise ValueError(f"the held-out class must lie in 0..{CLASSES - 1}, got {exclude}")
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    bounds = np.cumsum([0, n_train, n_valid, n_test])
    parts = [order[bounds[i]:bounds[i + 1]] for i in range(3)]
    classes = tuple(c for c in range(CLASSES) if c != exclude)
    relabel = np.full(CLASSES, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    kept = [p[y[p] != exclude] for p in parts]
    heldout = parts[0][y[parts[0]] == exclude] if exclude is not None else parts[0][:0]
    (tr, va, te) = kept
    return Split(x[tr], relabel[y[tr]], x[va], relabel[y[va]], x[te], relabel[y[te]], x[heldout], classes)


def ood_set(name: str, split: Split, seed: int, data_dir: str | os.PathLike | None = None,
            in_distribution: str = "mnist") -> np.ndarray:
    """The named OOD images (M, 784) float32 for a split's test set; ``data_dir`` holds the paper sets."""
    rng = np.random.default_rng(seed)
    n = len(split.x_test)
    if name == "heldout":
        if len(split.x_heldout) == 0:
            raise ValueError("the held-out OOD set needs a split made with exclude=<class>")
        return split.x_heldout
    if name == "uniform":
        return rng.random((n, PIXELS), dtype=np.float32)
    if name == "gaussian":
        return rng.standard_normal((n, PIXELS), dtype=np.float32)
    if name == "inverted":
        return (1.0 - split.x_test).astype(np.float32)
    if name == "permuted":
        return split.x_test[:, rng.permutation(PIXELS)]
    if name == "deformed":
        if in_distribution != "mnist":
            raise ValueError("the deformed-digits OOD set needs MNIST as the in-distribution data (it is the embedded default)")
        images = _deformed(n, seed)
        return images[rng.permutation(len(images))[:n]]
    if name in PAPER_OOD_SETS:
        if data_dir is None:
            raise DataError(f"the {name} OOD set needs --data-dir with its files (gensweep download {DOWNLOADS[name]} DIR)")
        return {"omniglot": load_omniglot, "notmnist": load_notmnist, "cifar10bw": load_cifar10bw}[name](data_dir)
    raise ValueError(f"unknown OOD set {name!r} (choose from {', '.join(OOD_SETS + PAPER_OOD_SETS)})")


@lru_cache(maxsize=4)
def _deformed(n: int, seed: int) -> np.ndarray:
    """max(n, 1,797) embedded deformed digits (N, 784) in [0, 1] (cached: drawing them takes seconds)."""
    from core.cmnist.sources import MIN_EMBEDDED_IMAGES, deformed_digits

    images, _, _ = deformed_digits(max(n, MIN_EMBEDDED_IMAGES), seed)
    out = _flat(images)
    out.setflags(write=False)
    return out


# ============================================================================ paper OOD sets


def _resize28(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float in [0, 1] → (N, 784) float32, bilinear."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(images, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1).reshape(len(t), -1).numpy()


def _need(path: Path, name: str) -> Path:
    if not path.exists():
        raise DataError(f"missing {name} file {path} (gensweep download {name} {path.parent})")
    return path


def load_omniglot(data_dir: str | os.PathLike) -> np.ndarray:
    """H&G's Omniglot OOD set: ``data_background.mat`` (``images`` per alphabet) or the ``images_background/``
    PNG folders (alphabets in sorted order), the 15 safe alphabets, 1 − image, 28×28, in [0, 1]."""
    root = Path(data_dir)
    mat, folder = root / "data_background.mat", root / "images_background"
    try:
        if mat.exists():
            from scipy.io import loadmat

            alphabets = loadmat(mat)["images"]
            images = [1.0 - np.asarray(example[0], dtype=np.float32)
                      for i in OMNIGLOT_SAFE for alphabet in alphabets[i] for letters in alphabet
                      for letter in letters for example in letter]
        elif folder.is_dir():
            from PIL import Image

            names = sorted(p for p in folder.iterdir() if p.is_dir())
            images = [1.0 - np.asarray(Image.open(png).convert("L"), dtype=np.float32) / 255.0
                      for i in OMNIGLOT_SAFE for png in sorted(names[i].rglob("*.png"))]
        else:
            _need(mat, "omniglot")
    except DataError:
        raise
    except Exception as exc:  # a corrupt or unexpected file: one line
        raise DataError(f"cannot read the omniglot set under {root}: {type(exc).__name__}: {exc}") from None
    return _resize28(np.stack(images))


def load_notmnist(data_dir: str | os.PathLike) -> np.ndarray:
    """``notMNIST.pickle``'s ``test_dataset`` (stored as (x − 128)/255), shifted back to [0, 1], (N, 784)."""
    path = _need(Path(data_dir) / "notMNIST.pickle", "notmnist")
    try:
        with open(path, "rb") as f:
            test = np.asarray(pickle.load(f, encoding="latin1")["test_dataset"], dtype=np.float32)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    return np.clip(test.reshape(len(test), -1) + 0.5, 0, 1).astype(np.float32)


def load_cifar10bw(data_dir: str | os.PathLike) -> np.ndarray:
    """CIFAR-10's ``test_batch`` (``core.memorization.data.download_cifar10``'s layout) in grey, 28×28, [0, 1]."""
    path = _need(Path(data_dir) / "test_batch", "cifar10")
    try:
        with open(path, "rb") as f:
            raw = np.asarray(pickle.load(f, encoding="latin1")["data"], dtype=np.float32).reshape(-1, 3, 32, 32) / 255.0
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    return _resize28(np.tensordot(np.asarray(GREY, dtype=np.float32), raw, axes=([0], [1])))
