"""DomainBed's Colored MNIST and Rotated MNIST, built as ``domainbed/datasets.py`` builds them, from any ImageSource.

``MultipleEnvironmentMNIST``: the source's images (DomainBed merges MNIST's
training and test splits, 70,000 images: :func:`core.data.load_idx_merged`)
are shuffled with ``torch.randperm`` and dealt round-robin into the
environments (``images[i::n_envs]``).

- **ColoredMNIST** (environments '+90%', '+80%', '-90%'): label = digit < 5,
  flipped with probability 0.25; colour = label xor Bernoulli(e), e = 0.1,
  0.2, 0.9; the image sits in channel ``colour`` of 2 x 28 x 28, the other
  channel zeroed; pixels / 255; 2 classes.
- **RotatedMNIST** (environments '0' ... '75'): the images rotated 0, 15, 30,
  45, 60, 75 degrees counter-clockwise (torchvision's ``rotate`` on a PIL image:
  PIL's bilinear rotation about the centre, zero fill, uint8), / 255; 10 classes.

Every random draw comes from one ``torch.Generator`` seeded with the run's
seed, in DomainBed's order (the permutation, then per environment the label
flips and the colours), so for the same images and seed the environments
equal DomainBed's, whose train.py seeds torch's global generator the same way.
Each environment is then split into ``out`` (the first ``int(n * holdout)``
of a ``numpy.random.RandomState(seed_hash(trial_seed, env)).shuffle`` of its
indices) and ``in`` (the rest), as ``lib/misc.split_dataset`` in train.py.

A run's data is kept as indices into shared base images (:class:`BaseImages`:
the source once, or once per angle), so a block of runs with their own
shuffles and noise costs a few index vectors each.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.data import ImageSource
from core.domainbed.hparams import HOLDOUT_FRACTION, seed_hash

ENVIRONMENTS = {"ColoredMNIST": ("+90%", "+80%", "-90%"), "RotatedMNIST": ("0", "15", "30", "45", "60", "75")}
COLOR_FLIP = (0.1, 0.2, 0.9)  # ColoredMNIST: P(colour != label) per environment
LABEL_NOISE = 0.25
ANGLES = (0, 15, 30, 45, 60, 75)
CHANNELS = {"ColoredMNIST": 2, "RotatedMNIST": 1}
NUM_CLASSES = {"ColoredMNIST": 2, "RotatedMNIST": 10}
DATASETS = tuple(ENVIRONMENTS)


def check_dataset(dataset: str) -> None:
    if dataset not in ENVIRONMENTS:
        raise ValueError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """One uint8 28 x 28 image rotated ``angle`` degrees counter-clockwise: PIL's bilinear rotation, zero fill.

    DomainBed: ``transforms.ToPILImage()``, ``rotate(x, angle, fill=(0,),
    interpolation=BILINEAR)``, ``ToTensor()`` (torchvision calls PIL's
    ``Image.rotate`` about the centre, same size).
    """
    from PIL import Image

    return np.asarray(Image.fromarray(image, mode="L").rotate(angle, resample=Image.BILINEAR, fillcolor=0))


@dataclass(frozen=True)
class BaseImages:
    """The source's images as the environments use them: ``views`` (V, N, 28, 28) uint8 (V = 1, or one per angle), labels (N,)."""

    dataset: str
    views: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> "BaseImages":
        return BaseImages(self.dataset, self.views.to(device), self.labels.to(device))


def base_images(source: ImageSource, dataset: str) -> BaseImages:
    """The views of ``source`` a dataset draws from: the images themselves (ColoredMNIST) or each rotation (RotatedMNIST)."""
    check_dataset(dataset)
    if dataset == "RotatedMNIST":
        views = np.stack([np.stack([rotate(img, angle) for img in source.images]) for angle in ANGLES])
    else:
        views = source.images[None]
    return BaseImages(dataset, torch.from_numpy(np.ascontiguousarray(views)), torch.as_tensor(source.labels, dtype=torch.long))


@dataclass(frozen=True)
class Env:
    """One environment of one run: its examples' positions in the base images, labels, colours; its in and out splits."""

    name: str
    view: int  # which view of BaseImages its images come from
    index: torch.Tensor  # (n,) positions in the base images
    y: torch.Tensor  # (n,) labels (after ColoredMNIST's noise)
    color: torch.Tensor | None  # (n,) ColoredMNIST's channel per image; None for RotatedMNIST
    in_keys: torch.Tensor  # positions within the environment: the in-split (training, and the test env's reported split)
    out_keys: torch.Tensor  # the out-split (training-domain validation; the oracle's selecting split)

    def to(self, device) -> "Env":
        move = lambda t: None if t is None else t.to(device)
        return Env(self.name, self.view, move(self.index), move(self.y), move(self.color), move(self.in_keys), move(self.out_keys))


def split_keys(n: int, trial_seed: int, env_index: int, holdout_fraction: float = HOLDOUT_FRACTION) -> tuple[list[int], list[int]]:
    """``misc.split_dataset(env, int(n * holdout), seed_hash(trial_seed, env))``: the (out, in) positions."""
    keys = list(range(n))
    np.random.RandomState(seed_hash(trial_seed, env_index)).shuffle(keys)
    cut = int(n * holdout_fraction)
    return keys[:cut], keys[cut:]


def environments(base: BaseImages, seed: int, trial_seed: int, holdout_fraction: float = HOLDOUT_FRACTION) -> list[Env]:
    """The run's environments (see the module docstring): DomainBed's shuffle, deal, noise and colours, then the splits."""
    dataset = base.dataset
    names = ENVIRONMENTS[dataset]
    n_envs = len(names)
    g = torch.Generator().manual_seed(int(seed))
    labels = base.labels.cpu()
    shuffle = torch.randperm(len(labels), generator=g)
    envs = []
    for i, name in enumerate(names):
        index = shuffle[i::n_envs]
        y, color, view = labels[index], None, 0
        if dataset == "ColoredMNIST":
            y = (y < 5).float()
            y = (y - (torch.rand(len(y), generator=g) < LABEL_NOISE).float()).abs()  # torch_xor_(labels, bernoulli(0.25))
            color = (y - (torch.rand(len(y), generator=g) < COLOR_FLIP[i]).float()).abs().long()
            y = y.long()
        else:
            view = i
        out_keys, in_keys = split_keys(len(index), trial_seed, i, holdout_fraction)
        envs.append(Env(name, view, index, y, color, torch.tensor(in_keys, dtype=torch.long), torch.tensor(out_keys, dtype=torch.long)))
    return envs


def images_of(base: BaseImages, env: Env, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The model inputs (n, C, 28, 28) of the environment's examples at ``positions`` (pixels / 255)."""
    flat = base.views[env.view][env.index[positions]].to(dtype).div_(255.0)
    if env.color is None:
        return flat.unsqueeze(1)
    color = env.color[positions]
    return torch.stack([flat * (color == 0).view(-1, 1, 1), flat * (color == 1).view(-1, 1, 1)], dim=1)
