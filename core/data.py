"""Image sources: MNIST-format IDX files, scikit-learn's embedded digits, optional download.

An :class:`ImageSource` is the raw material every image experiment starts from:
uint8 images of shape (N, 28, 28) and integer labels (N,). Experiments (Colored
MNIST and its variants) are built from a source, never from files directly;
the Colored MNIST pipelines' embedded default, the deformed digits, is
:mod:`core.cmnist.sources`.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "ImageSource",
    "read_idx",
    "load_idx_dir",
    "load_idx_merged",
    "load_digits_source",
    "download_mnist",
]


class DataError(RuntimeError):
    """A data file is missing, unreadable or malformed (the message says which)."""


@dataclass(frozen=True)
class ImageSource:
    """Images (N, 28, 28) uint8 in 0..255, labels (N,) int64, and where they came from."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    description: str = ""  # what the images are, for reports (not part of the fingerprint)

    @property
    def fingerprint(self) -> str:
        """Short content hash: names the source in caches and result rows."""
        h = hashlib.sha1()
        h.update(self.images.tobytes())
        h.update(self.labels.tobytes())
        return f"{self.name}:{h.hexdigest()[:12]}"

    def data_note(self) -> str | None:
        """What the runner asks of any data before Ray starts: :func:`check_digits` (raises DataError, or a note)."""
        return check_digits(self)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip or raw) into an array; raise DataError if it is corrupt."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read data file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"corrupt data file {path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt data file {path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"corrupt data file {path}: {len(raw) - header} data bytes, expected {expected} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_splits(directory: Path) -> list[tuple[str, ImageSource]]:
    """Every split (train, t10k) present in ``directory``, read and checked, in that order."""
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    found = []
    for split in ("train", "t10k"):
        img, lab = _find(directory, f"{split}-images-idx3-ubyte"), _find(directory, f"{split}-labels-idx1-ubyte")
        if img is None and lab is None:
            continue
        if img is None or lab is None:
            missing = f"{split}-images-idx3-ubyte[.gz]" if img is None else f"{split}-labels-idx1-ubyte[.gz]"
            raise DataError(f"data file not found: {directory / missing}")
        images, labels = read_idx(img), read_idx(lab)
        if images.size == 0:
            raise DataError(f"data file {img} holds no images (an empty IDX file)")
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"corrupt data file {img}: expected uint8 images of 28x28, got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"corrupt data file {lab}: {labels.shape} labels for {len(images)} images")
        release = known_release(img, lab)
        what = f"{release} {SPLIT_NAMES[split]}" if release else f"IDX files ({SPLIT_NAMES[split]} names; checksums match no known release)"
        found.append((split, ImageSource(f"idx:{directory.name}/{split}", images, labels.astype(np.int64), what)))
    if not found:
        raise DataError(
            f"no MNIST-format files in {directory} (expected train-images-idx3-ubyte.gz and "
            f"train-labels-idx1-ubyte.gz, or the t10k-* test split)"
        )
    return found


SMALL_SET = 1_000  # fewer images than this: a sweep runs, but its tables say little (a note is printed)


def check_digits(source: ImageSource) -> str | None:
    """Refuse (DataError) images a digit pipeline cannot use: none, or labels outside 0-9; a note when they are few.

    Loaders accept any IDX content; a sweep's data must be ten classes
    (MNIST's digits, Fashion-MNIST's classes), or every trial fails (or, with
    labels past 9, a table is printed from nonsense).
    """
    where = source.description or source.name
    if len(source.images) == 0:
        raise DataError(f"no images in {where}")
    labels = np.asarray(source.labels)
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"labels outside 0-9 ({labels.min()}..{labels.max()}) in {where}: a digit pipeline needs classes 0-9")
    if len(labels) < SMALL_SET:
        return (f"only {len(labels):,} images ({where}): the sweep runs, but with fewer than {SMALL_SET:,} its "
                "environments are a handful of images each and its tables say little")
    return None


def load_idx_dir(directory: str | os.PathLike) -> ImageSource:
    """Load an MNIST-format directory (MNIST or Fashion-MNIST).

    Uses the training split (``train-*``) when present, else the test split
    (``t10k-*``); files may be gzipped or raw.
    """
    directory = Path(directory)
    _, source = _read_splits(directory)[0]
    description = f"{source.description}, {len(source.images):,} images, from {directory.resolve()}"
    return ImageSource(source.name, source.images, source.labels, description)


def load_idx_merged(directory: str | os.PathLike) -> ImageSource:
    """Every split of an MNIST-format directory, the training split first, as one source (DomainBed's 70,000 images).

    DomainBed's ``MultipleEnvironmentMNIST`` concatenates MNIST's training and
    test splits; with one split present, that split alone.
    """
    directory = Path(directory)
    splits = _read_splits(directory)
    images = np.concatenate([s.images for _, s in splits])
    labels = np.concatenate([s.labels for _, s in splits])
    what = " + ".join(s.description for _, s in splits) + (" merged" if len(splits) > 1 else "")
    name = f"idx:{directory.name}/" + "+".join(split for split, _ in splits)
    return ImageSource(name, images, labels, f"{what}, {len(images):,} images, from {directory.resolve()}")


SPLIT_NAMES = {"train": "training split (train-*)", "t10k": "test split (t10k-*)"}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _content_sha256(path: Path) -> str:
    """SHA-256 of the file's content, decompressed when it is gzipped (``name.gz``): the same for both forms."""
    h = hashlib.sha256()
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def known_release(images: Path, labels: Path) -> str | None:
    """The data set whose official files these are (MNIST, Fashion-MNIST), else None.

    A file is a release's when its decompressed content has the release's SHA-256 (:data:`KNOWN_CONTENT`), so a
    gunzipped copy (``train-images-idx3-ubyte``) is recognised as the ``.gz`` is; a ``.gz`` whose md5 is the
    published one (:data:`KNOWN_RELEASES`) is taken without decompressing it. Both files must be the same release's.
    """
    digests: dict[tuple[Path, str], str] = {}

    def digest(path: Path, kind: str) -> str:
        if (path, kind) not in digests:
            digests[path, kind] = _md5(path) if kind == "md5" else _content_sha256(path)
        return digests[path, kind]

    def ours(path: Path, release: str) -> bool:
        published = KNOWN_RELEASES.get(release, {}).get(path.name)  # the .gz files' md5 (plain names are not listed)
        if published is not None and digest(path, "md5") == published:
            return True
        content = KNOWN_CONTENT.get(release, {}).get(path.name.removesuffix(".gz"))
        return content is not None and digest(path, "sha256") == content

    for release in dict.fromkeys([*KNOWN_CONTENT, *KNOWN_RELEASES]):
        if all(ours(path, release) for path in (images, labels)):
            return release
    return None


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Exact bilinear resampling taps (align_corners=False, as torch's ``interpolate``): output i reads inputs
    ``lo[i]`` and ``hi[i]`` with integer weights ``den - w[i]`` and ``w[i]`` over ``den``."""
    den = 2 * n_out
    num = np.maximum((2 * np.arange(n_out) + 1) * n_in - n_out, 0)  # source coordinate x den: (i + 1/2) n_in/n_out - 1/2
    lo = num // den
    return lo, np.minimum(lo + 1, n_in - 1), num - lo * den, den


def upsample_exact(images: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Integer images (N, h, w) resized bilinearly to (size, size) in exact integer arithmetic: (numerators, denominator).

    Float resampling rounds differently on different CPUs (AVX2 and AVX-512 kernels), and a pixel that lands on a
    rounding tie then differs from machine to machine: the embedded data, and every sweep id built on its fingerprint,
    would depend on the CPU.
    """
    images = images.astype(np.int64)
    ly, hy, wy, dy = _bilinear_taps(images.shape[1], size)
    lx, hx, wx, dx = _bilinear_taps(images.shape[2], size)
    rows = images[:, ly, :] * (dy - wy)[None, :, None] + images[:, hy, :] * wy[None, :, None]
    return rows[:, :, lx] * (dx - wx) + rows[:, :, hx] * wx, dy * dx


def round_half_even(num: np.ndarray, den: int) -> np.ndarray:
    """num / den rounded to the nearest integer, ties to even (torch.round's rule), exactly."""
    q, r = np.divmod(num, den)
    return q + ((2 * r > den) | ((2 * r == den) & (q % 2 == 1)))


def load_digits_source() -> ImageSource:
    """scikit-learn's 1,797 handwritten digits, upsampled to 28x28 (the memorization study's embedded set).

    The 8x8 images (values 0..16) are bilinearly resized to 28x28 and scaled to
    0..255 so that every MNIST construction (including the 2x subsample to
    14x14) applies unchanged; in exact arithmetic, so the images are the same on
    every CPU. No download is needed.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    num, den = upsample_exact(digits.images.astype(np.int64), 28)
    images = round_half_even(num * 255, den * 16).astype(np.uint8)  # values 0..16 scaled to 0..255
    return ImageSource("digits", images, digits.target.astype(np.int64),
                       "embedded scikit-learn digits, 1,797 images (8x8 upsampled to 28x28)")


MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_FILES = {  # Zalando's release (zalandoresearch/fashion-mnist), as torchvision's FashionMNIST lists them
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
KNOWN_RELEASES = {"MNIST": MNIST_FILES, "Fashion-MNIST": FASHION_MNIST_FILES}
# SHA-256 of the decompressed files. MNIST's t10k pair computed here from the official .gz (md5 above); public code that
# checks gunzipped copies of the ossci mirror's files lists the same two values, and its train pair is taken from that
# list. Fashion-MNIST's: as public code lists torchvision's raw/ (gunzipped) files; not checked here (no copy on hand).
MNIST_CONTENT = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_CONTENT = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
KNOWN_CONTENT = {"MNIST": MNIST_CONTENT, "Fashion-MNIST": FASHION_MNIST_CONTENT}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def download_mnist(directory: str | os.PathLike, mirror: str = MNIST_MIRROR) -> Path:
    """Download the four MNIST files into ``directory`` (for users who are online), checking md5."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, md5 in MNIST_FILES.items():
        target = directory / name
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        try:
            with urllib.request.urlopen(mirror + name, timeout=60) as response:
                payload = response.read()
        except OSError as exc:
            raise DataError(f"cannot download {mirror + name}: {exc}") from None
        if hashlib.md5(payload).hexdigest() != md5:
            raise DataError(f"downloaded {name} has the wrong checksum")
        target.write_bytes(payload)
    return directory
