"""The image sources of the Colored MNIST experiments: MNIST-format files, or the embedded deformed digits.

Embedded default (no download): scikit-learn's 1,797 handwritten 8x8 digits,
each drawn many times at 28x28 under its own random affine transform
(rotation, log-uniform scale, horizontal shear, shift) and a smooth elastic
displacement field (uniform noise smoothed by a Gaussian, Simard et al. 2003,
scaled to a largest displacement), sampled bilinearly from the 8x8 image with
the frame of :func:`core.data.load_digits_source` (the same pixel centres; an
undeformed image equals the plain upsampled digit away from its 2-pixel
border, where this sampler sees zeros outside the 8x8 image instead of
repeating its edge). All of it is seeded and takes about a second.

Held-out source digits. The 1,797 sources are split first, per class and
seeded: 1/6 of each class (299 digits) are test sources, the rest (1,498)
training sources. The generator then *orders* its images so that the
unchanged Colored MNIST split (:func:`core.cmnist.domains.split_indices`: the
first round(5/6 · n) images are training images, the rest the test domain; the
IRM code's rule, applied to MNIST the same way) puts exactly the test sources'
images in the test domain: the first round(5/6 · n) images are deformations
of the training sources (each about equally often, cycled), the rest of the
test sources. One code path builds the domains from MNIST and from this set;
every image still gets its own label noise and colour draw there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from core.cmnist.domains import train_count
from core.data import ImageSource, load_idx_dir

SIZE = 28
EMBEDDED_IMAGES = 12_000  # the default image count (cmnist-table's smoke preset; see the README's Data section)
EMBEDDED_SEED = 0
MIN_EMBEDDED_IMAGES = 1_797  # the fewest that draw every source digit (1,498 training, 299 test sources) once


@dataclass(frozen=True)
class Deformation:
    """Ranges each image draws its deformation from, uniformly (lengths in pixels of the 28x28 image)."""

    rotation: float = 5.0  # degrees: U(-rotation, rotation)
    scale: float = 0.05  # zoom factor log-uniform in [1 - scale, 1 + scale]
    shear: float = 0.05  # horizontal shear x += k·y, k ~ U(-shear, shear)
    shift: float = 1.0  # pixels, each axis U(-shift, shift)
    elastic: float = 1.0  # largest displacement of the elastic field, pixels
    elastic_sigma: float = 4.0  # Gaussian smoothing (std, pixels) of the elastic field's noise

    def describe(self) -> str:
        return (f"rotation ±{self.rotation:g}°, scale ×{1 - self.scale:g}–{1 + self.scale:g}, shear ±{self.shear:g}, "
                f"shift ±{self.shift:g} px, elastic field ≤ {self.elastic:g} px (σ {self.elastic_sigma:g} px)")


NO_DEFORMATION = Deformation(rotation=0.0, scale=0.0, shear=0.0, shift=0.0, elastic=0.0)


def split_sources(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training sources, test sources): per class, the CMNIST split's share (n_c − round(5/6 · n_c)) held out at random."""
    held_out = []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        held_out.append(rng.permutation(members)[train_count(len(members)):])
    test = np.sort(np.concatenate(held_out))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _gaussian_rows(n: int, sigma: float) -> np.ndarray:
    """(n, n) smoothing matrix: row i is a normalized Gaussian of std ``sigma`` centred on i."""
    i = np.arange(n)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def deform(images8: np.ndarray, rng: np.random.Generator, deformation: Deformation) -> np.ndarray:
    """Each 8x8 image (values 0..16) drawn once at 28x28 under its own random deformation: uint8 (N, 28, 28), 0..255.

    Resampled in float64: float32 kernels round differently on AVX2, AVX-512 and generic CPUs (27 of the default
    set's 9.4 million pixels moved), which made the data, and every sweep id built on it, depend on the machine.
    """
    import torch
    import torch.nn.functional as F

    n, d = len(images8), deformation
    angle = np.deg2rad(rng.uniform(-d.rotation, d.rotation, n))
    zoom = np.exp(rng.uniform(np.log1p(-d.scale), np.log1p(d.scale), n))
    shear = rng.uniform(-d.shear, d.shear, n)
    shift = rng.uniform(-d.shift, d.shift, (n, 2)) * (2.0 / SIZE)  # grid units: the image spans [-1, 1]
    noise = rng.uniform(-1.0, 1.0, (n, 2, SIZE, SIZE))
    # Output point p samples the source at M (p - shift): M undoes the zoom, shear and rotation (x, y order).
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    sheared = np.tile(np.eye(2), (n, 1, 1))
    sheared[:, 0, 1] = shear
    m = sheared @ rotate / zoom[:, None, None]
    theta = torch.tensor(np.concatenate([m, -(m @ shift[:, :, None])], axis=2), dtype=torch.float64)
    grid = F.affine_grid(theta, [n, 1, SIZE, SIZE], align_corners=False)
    if d.elastic > 0:
        smooth = torch.tensor(_gaussian_rows(SIZE, d.elastic_sigma), dtype=torch.float64)
        field = smooth @ torch.tensor(noise, dtype=torch.float64) @ smooth.T
        largest = field.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12)
        grid = grid + (field * (d.elastic * 2.0 / SIZE / largest)[:, None, None, None]).permute(0, 2, 3, 1)
    source = torch.tensor(np.asarray(images8), dtype=torch.float64)[:, None]
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    return (out.clamp(0, 16) * (255.0 / 16.0)).round().to(torch.uint8).numpy()


def deformed_digits(
    n_images: int = EMBEDDED_IMAGES, seed: int = EMBEDDED_SEED, deformation: Deformation = Deformation()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels (n,), origin (n,): the index of the scikit-learn digit each was drawn from).

    The first ``train_count(n)`` images come from the training sources, the
    rest from the held-out test sources (:func:`split_sources`); each part
    cycles through its sources, so every source is drawn about equally often.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_sources, test_sources = split_sources(labels, rng)
    n_train = train_count(n_images)
    if n_train < len(train_sources) or n_images - n_train < len(test_sources):
        raise ValueError(f"{n_images} images do not draw each of the 1,797 source digits at least once "
                         f"(at least {MIN_EMBEDDED_IMAGES:,})")
    origin = np.concatenate([train_sources[np.arange(n_train) % len(train_sources)],
                             test_sources[np.arange(n_images - n_train) % len(test_sources)]])
    return deform(digits.images[origin], rng, deformation), labels[origin], origin


def deformed_digits_source(
    n_images: int = EMBEDDED_IMAGES, seed: int = EMBEDDED_SEED, deformation: Deformation = Deformation()
) -> ImageSource:
    """The embedded default source: :func:`deformed_digits` as an ImageSource whose description says what it is."""
    images, labels, origin = deformed_digits(n_images, seed, deformation)
    n_train = train_count(n_images)
    description = (
        f"embedded deformed digits: {n_images:,} images drawn at 28x28 from scikit-learn's 1,797 8x8 digits under "
        f"random affine + elastic deformations ({deformation.describe()}), seed {seed}; the last {n_images - n_train:,} "
        f"(the test domain) from {len(np.unique(origin[n_train:]))} source digits that none of the first {n_train:,} "
        f"comes from"
    )
    return ImageSource("deformed-digits", images, labels, description)


def load_source(data_dir: str | os.PathLike | None, embedded_images: int = EMBEDDED_IMAGES) -> ImageSource:
    """The source for ``--data-dir``: an MNIST-format IDX directory, or the embedded deformed digits when None."""
    return deformed_digits_source(embedded_images) if data_dir is None else load_idx_dir(data_dir)
