"""Models of the memorization study (thesis §3.2) and their optimizers.

- :func:`mlp`: ReLU MLP with ``depth`` hidden layers of ``width`` units (2 x 4096 on MNIST);
- :func:`small_cnn`: the small AlexNet-style CNN of Zhang et al. used on CIFAR-10.

Regularizers (thesis §3.5) are constructor settings: ``dropout`` (after every
hidden layer), ``input_dropout``, ``input_noise`` and ``hidden_noise`` (std of
additive Gaussian noise on the input / after every hidden layer). Dropout and
noise act in train mode only. Weight decay is an optimizer setting
(:func:`make_optimizer`).

``seed`` makes the initial weights a function of the seed alone (a private
generator; PyTorch's default distributions: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
for weights and biases of Linear and Conv2d, BatchNorm at weight 1, bias 0).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "GaussianNoise",
    "Crop",
    "mlp",
    "small_cnn",
    "init_weights",
    "mlp_weights",
    "make_optimizer",
    "step_schedule",
    "MLP_SGD",
    "CNN_SGD",
]

# Optimizer settings of thesis §3.2 (keywords of make_optimizer / step_schedule).
MLP_SGD = {"kind": "sgd", "lr": 0.01, "momentum": 0.0}
CNN_SGD = {"kind": "sgd", "lr": 0.01, "momentum": 0.9, "lr_step": 15, "lr_gamma": 0.5}


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise to every element in train mode; identity in eval mode."""

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class Crop(nn.Module):
    """Crops ``height`` rows from top and bottom and ``width`` columns from left and right."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return x[..., self.height : h - self.height, self.width : w - self.width]


def _regularized(layers: list[nn.Module], dropout: float, noise: float) -> list[nn.Module]:
    """``layers`` followed by hidden Gaussian noise and dropout when their settings are non-zero."""
    return layers + ([GaussianNoise(noise)] if noise > 0 else []) + ([nn.Dropout(dropout)] if dropout > 0 else [])


def _input_layers(input_dropout: float, input_noise: float) -> list[nn.Module]:
    return ([GaussianNoise(input_noise)] if input_noise > 0 else []) + ([nn.Dropout(input_dropout)] if input_dropout > 0 else [])


def _private_rng(seed: int | None):
    """With a seed, PyTorch's own default initialisation draws from a forked global RNG (left as it was)."""
    return torch.random.fork_rng(devices=[], enabled=seed is not None)


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * 2 * bound - bound


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every Linear / Conv2d weight and bias from a generator seeded with ``seed``, in module order.

    Each layer: weight then bias, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())  # 1/sqrt(fan_in)
                for p in (module.weight, module.bias):
                    if p is not None:
                        p.copy_(_uniform(tuple(p.shape), bound, g))
    return model


def mlp_weights(in_dim: int, width: int, classes: int, depth: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (weight (out, in), bias (out,)) of each Linear of ``mlp(in_dim, width, classes, depth, seed=seed)``.

    The same draws as :func:`init_weights`, without building the model (stacked blocks of many runs).
    """
    g = torch.Generator().manual_seed(int(seed))
    dims = [in_dim] + [width] * depth + [classes]
    out = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        weight = _uniform((fan_out, fan_in), bound, g)
        out.append((weight, _uniform((fan_out,), bound, g)))
    return out


def mlp(
    in_dim: int,
    width: int,
    classes: int,
    depth: int = 2,
    *,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    input_noise: float = 0.0,
    hidden_noise: float = 0.0,
    seed: int | None = None,
) -> nn.Sequential:
    """Flatten -> depth x [Linear(width), ReLU] -> Linear(classes); logits out."""
    layers: list[nn.Module] = [nn.Flatten()] + _input_layers(input_dropout, input_noise)
    with _private_rng(seed):
        for i in range(depth):
            layers += _regularized([nn.Linear(in_dim if i == 0 else width, width), nn.ReLU()], dropout, hidden_noise)
        model = nn.Sequential(*layers, nn.Linear(width if depth else in_dim, classes))
    return model if seed is None else init_weights(model, seed)


def _pooled(size: int) -> int:
    """Spatial size after MaxPool2d(3, stride=2, padding=1): ceil(size / 2)."""
    return (size + 2 - 3) // 2 + 1


def small_cnn(
    in_shape: tuple[int, int, int],
    classes: int,
    *,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    input_noise: float = 0.0,
    hidden_noise: float = 0.0,
    seed: int | None = None,
) -> nn.Sequential:
    """The thesis' small AlexNet-style CNN for inputs (C, H, W) (CIFAR-10: (3, 32, 32)).

    Crop(2,2) -> 2 x [Conv(200, 5x5, 'same') BN ReLU MaxPool(3x3)] -> Dense(384) BN
    ReLU -> Dense(192) BN ReLU -> Dense(classes). The pooling windows are 3x3 with
    stride 2 and padding 1, as in the TensorFlow CIFAR-10 model that Zhang et
    al.'s small AlexNet follows (32x32 -> crop 28 -> 14 -> 7; 28x28 -> 24 -> 12 -> 6).
    Dropout and hidden noise follow each conv block and each hidden dense layer.
    """
    channels, height, width = in_shape
    h, w = height - 4, width - 4
    for _ in range(2):
        h, w = _pooled(h), _pooled(w)
    if h < 1 or w < 1:
        raise ValueError(f"input {in_shape} is too small for the small CNN")

    def conv_block(c_in: int) -> list[nn.Module]:
        block = [nn.Conv2d(c_in, 200, 5, padding=2), nn.BatchNorm2d(200), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]
        return _regularized(block, dropout, hidden_noise)

    def dense_block(d_in: int, d_out: int) -> list[nn.Module]:
        return _regularized([nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU()], dropout, hidden_noise)

    with _private_rng(seed):
        model = nn.Sequential(
            Crop(2, 2),
            *_input_layers(input_dropout, input_noise),
            *conv_block(channels),
            *conv_block(200),
            nn.Flatten(),
            *dense_block(200 * h * w, 384),
            *dense_block(384, 192),
            nn.Linear(192, classes),
        )
    return model if seed is None else init_weights(model, seed)


def make_optimizer(
    model: nn.Module, kind: str = "sgd", lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """SGD (with optional momentum) or Adam over all of ``model``'s parameters; weight decay is L2 on all."""
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r} (expected sgd or adam)")


def step_schedule(optimizer: torch.optim.Optimizer, lr_step: int | None, lr_gamma: float = 0.5):
    """Learning rate times ``lr_gamma`` every ``lr_step`` epochs (CNN: halved every 15); None = constant."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step or 10**9, gamma=lr_gamma)
