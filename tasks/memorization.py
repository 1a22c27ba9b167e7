"""Trainables of the memorization study (thesis chapter 3), one per sub-experiment.

Every trainable takes ``(config, data)``: ``config`` a flat JSON dict (or one
with a ``block`` list, see :func:`tasks.report.configurations`), ``data`` the
:class:`MemData` (clean train and validation :class:`ImageSet`) that the
pipeline's ``load_data`` returned. Noise datasets are built here, from the
config's ``noise`` (real | randX | randY), ``fraction`` and ``data_seed``, and
cached per worker process; validation data is never corrupted.

- :func:`regularizer_trainable` (Fig 3.10/3.11): one MLP or CNN with one regularizer at one value;
- :func:`csr_trainable` (Fig 3.7-3.9): accuracy and critical sample ratio every epoch;
- :func:`easy_trainable` (Fig 3.1): a block of one-epoch MLP seeds trained together
  (core.memorization.seeds), each row keeping its per-example training errors;
- :func:`sensitivity_trainable` (Fig 3.3/3.4): unrolled loss-sensitivity of tiny MLPs,
  the block's seeds unrolled together as one stacked block (core.memorization.sensitivity);
- :func:`capacity_trainable` (Fig 3.5/3.6): a block of (width, n_train, seed) runs,
  each (width, n_train) group trained as one stacked block for the same budget of epochs.

One Report per epoch (or measured step) holds one metrics dict per configuration
(``models``), ``final=True`` on the last.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.device import default_device
from core.memorization import data as mdata
from core.memorization.data import ImageSet
from core.memorization.lass import MAX_ITER, MIN_NEW
from core.memorization.models import mlp, small_cnn
from core.memorization.seeds import init_block, train_seeds
from core.memorization.sensitivity import gini, per_class_matrix, sgd_batches, unrolled_sensitivity_block
from core.memorization.train import stream_seed, train
from tasks.cache import WorkerCache
from tasks.report import Report, configurations, tune_reporter

NOISE = ("real", "randX", "randY")


@dataclass(frozen=True)
class MemData:
    """Clean training and validation sets; the fingerprint names both."""

    train: ImageSet
    val: ImageSet

    @property
    def fingerprint(self) -> str:
        return f"{self.train.fingerprint}|{self.val.fingerprint}"

    @property
    def description(self) -> str:
        """How many clean training and validation images, drawn from what."""
        size = "x".join(str(d) for d in self.train.x.shape[1:])
        return f"{len(self.train):,} training and {len(self.val):,} validation images ({size}) of {self.train.source or self.train.name}"


# ------------------------------------------------------------------------------------- noise data

_TRAINING_SETS: WorkerCache[ImageSet] = WorkerCache(8)


def training_set(data: MemData, noise: str, fraction: float, data_seed: int, n_train: int = 0) -> ImageSet:
    """The first ``n_train`` (0: all) training examples with ``noise`` on a ``fraction`` of them (cached)."""
    key = (data.fingerprint, noise, float(fraction), int(data_seed), int(n_train))
    return _TRAINING_SETS.get(key, lambda: _with_noise(data, noise, fraction, data_seed, n_train))


def _with_noise(data: MemData, noise: str, fraction: float, data_seed: int, n_train: int) -> ImageSet:
    base = data.train if not n_train else mdata.subset(data.train, torch.arange(min(n_train, len(data.train))))
    if noise == "real" or fraction == 0:
        return base
    if noise == "randX":
        return mdata.rand_x(base, float(fraction), int(data_seed))[0]
    if noise == "randY":
        return mdata.rand_y(base, float(fraction), int(data_seed))[0]
    raise ValueError(f"unknown noise {noise!r} (expected one of {NOISE})")


def _model(config: dict, train_set: ImageSet, **regularizers) -> torch.nn.Module:
    seed = int(config["seed"])
    if config.get("model", "mlp") == "cnn":
        return small_cnn(tuple(train_set.x.shape[1:]), train_set.classes, seed=seed, **regularizers)
    in_dim = int(np.prod(train_set.x.shape[1:]))
    return mlp(in_dim, int(config["width"]), train_set.classes, int(config.get("depth", 2)), seed=seed, **regularizers)


def _lass(config: dict) -> dict:
    """The LASS search settings of a config (defaults: the reference code's)."""
    return dict(lass_iters=int(config.get("lass_iters", MAX_ITER)), lass_min_new=int(config.get("lass_min_new", MIN_NEW)))


def _sgd(config: dict) -> dict:
    return dict(batch_size=int(config["batch_size"]), kind=str(config.get("optimizer", "sgd")), lr=float(config["lr"]), momentum=float(config.get("momentum", 0.0)),
                lr_step=int(config.get("lr_step", 0)) or None, lr_gamma=float(config.get("lr_gamma", 0.5)))


# ----------------------------------------------------------------------------------- regularizers

REGULARIZERS = ("none", "dropout", "input_dropout", "input_noise", "hidden_noise", "weight_decay", "adversarial")


def regularizer_kwargs(regularizer: str, value: float, adv_dropout: float = 0.0) -> tuple[dict, dict]:
    """(model keywords, train keywords) of one regularizer at one value ("adversarial": dropout + LASS training)."""
    if regularizer == "none":
        return {}, {}
    if regularizer in ("dropout", "input_dropout", "input_noise", "hidden_noise"):
        return {regularizer: float(value)}, {}
    if regularizer == "weight_decay":
        return {}, {"weight_decay": float(value)}
    if regularizer == "adversarial":
        return {"dropout": float(adv_dropout)}, {"adversarial_weight": float(value)}
    raise ValueError(f"unknown regularizer {regularizer!r} (expected one of {REGULARIZERS})")


def run_regularizer(config: dict, data: MemData, report: Callable[[Report], None]) -> list[dict]:
    """One model: ``noise`` (real | randY) data, ``regularizer`` at ``value``; a Report per epoch."""
    train_set = training_set(data, config["noise"], float(config.get("fraction", 1.0)), int(config.get("data_seed", 0)))
    model_kw, train_kw = regularizer_kwargs(config["regularizer"], float(config["value"]), float(config.get("adv_dropout", 0.0)))
    model = _model(config, train_set, **model_kw).to(default_device())
    epochs, best = int(config["epochs"]), [0.0]

    def on_epoch(row: dict) -> None:
        best[0] = max(best[0], row["val_acc"])
        metrics = {"step": row["epoch"], **{k: row[k] for k in ("train_acc", "train_loss", "val_acc", "val_loss")}, "best_val_acc": best[0],
                   "adv_critical": row.get("adv_critical", 0.0)}
        report(Report(step=row["epoch"], final=row["epoch"] == epochs, metrics=[metrics]))

    if train_kw.get("adversarial_weight"):
        train_kw.update(_lass(config))
    return train(model, train_set, data.val, epochs=epochs, seed=int(config["seed"]), on_epoch=on_epoch, **_sgd(config), **train_kw)


def regularizer_trainable(config: dict, data: MemData) -> None:
    run_regularizer(config, data, tune_reporter())


# -------------------------------------------------------------------------------------------- CSR


def run_csr(config: dict, data: MemData, report: Callable[[Report], None]) -> list[dict]:
    """Train/val accuracy and the critical sample ratio on ``csr_examples`` validation points drawn afresh every epoch."""
    train_set = training_set(data, config["noise"], float(config["fraction"]), int(config.get("data_seed", 0)))
    model = _model(config, train_set).to(default_device())
    epochs = int(config["epochs"])

    def on_epoch(row: dict) -> None:
        metrics = {"step": row["epoch"], **{k: row[k] for k in ("train_acc", "train_loss", "val_acc", "val_loss", "csr")}}
        report(Report(step=row["epoch"], final=row["epoch"] == epochs, metrics=[metrics]))

    return train(model, train_set, data.val, epochs=epochs, seed=int(config["seed"]), csr_examples=int(config["csr_examples"]),
                 on_epoch=on_epoch, **_lass(config), **_sgd(config))


def csr_trainable(config: dict, data: MemData) -> None:
    run_csr(config, data, tune_reporter())


# ---------------------------------------------------------------------------------- easy examples


def encode_bits(mask: torch.Tensor) -> str:
    """A bool vector as hex text (numpy packbits, big-endian bit order): compact per-example results in one column."""
    return np.packbits(mask.cpu().numpy().astype(np.uint8)).tobytes().hex()


def decode_bits(text: str, n: int) -> np.ndarray:
    """The bool vector (n,) that :func:`encode_bits` wrote."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def run_easy(config: dict, data: MemData, report: Callable[[Report], None]) -> None:
    """The block's seeds (one MLP each, own init and data order) trained together for ``epochs`` (1).

    Each seed's final row has ``wrong_bits``: which training examples it misclassifies (:func:`decode_bits`),
    and ``labels``: the training labels it was trained on, one digit per example (classes <= 10; else empty).
    """
    train_set = training_set(data, config["noise"], float(config.get("fraction", 1.0)), int(config.get("data_seed", 0)))
    seeds = [int(c["seed"]) for c in configurations(config)]
    epochs = int(config["epochs"])
    result = train_seeds(train_set, data.val, width=int(config["width"]), seeds=seeds, epochs=epochs,
                         batch_size=int(config["batch_size"]), lr=float(config["lr"]), depth=int(config.get("depth", 2)),
                         device=default_device())
    for row in result.history:
        metrics = [{"step": row["epoch"], **{k: row[k][i] for k in ("train_acc", "train_loss", "val_acc", "val_loss")},
                   "n_examples": len(train_set), "wrong_bits": "", "labels": ""} for i in range(len(seeds))]
        if row["epoch"] == epochs:
            labels = "".join(map(str, train_set.y.tolist())) if train_set.classes <= 10 else ""
            for i, m in enumerate(metrics):
                m["wrong_bits"], m["labels"] = encode_bits(result.wrong[i]), labels
        report(Report(step=row["epoch"], final=row["epoch"] == epochs, metrics=metrics))


def easy_trainable(config: dict, data: MemData) -> None:
    run_easy(config, data, tune_reporter())


# ------------------------------------------------------------------------------- loss-sensitivity


def sensitivity_set(data: MemData, inputs: str, labels: str, data_seed: int) -> ImageSet:
    """Real or random (randX, 100%) inputs, with their labels or one class per example."""
    images = training_set(data, "real" if inputs == "real" else "randX", 1.0, data_seed)
    return mdata.one_class_per_example(images) if labels == "oneclass" else images


def run_sensitivity(config: dict, data: MemData, report: Callable[[Report], None]) -> None:
    """Per seed of the block: SGD on (x, y) unrolled, g^t_x at every ``measure_every``-th step, its Gini.

    Steps are measured from the end of the first epoch on (before it, the examples
    not yet drawn have g = 0, which would inflate the Gini of any data).
    Reports at each measured step t, per seed: ``gini_t`` (Gini of g^t_x over
    examples), ``gini`` (Gini of g_bar_x, the mean of g^t_x over the measured
    steps so far) and the mean g. The final row of a run with normal labels
    carries ``class_matrix`` (Fig 3.4, averaged over measured steps) as JSON.
    The block's seeds (own initial weights, own batch order) are unrolled
    together as one stacked block, equal to each seed measured alone.
    """
    images = sensitivity_set(data, config["inputs"], config["labels"], int(config.get("data_seed", 0)))
    x, y = images.x.flatten(1), images.y
    steps, every = int(config["steps"]), int(config["measure_every"])
    batch = int(config["batch_size"])
    first = min(steps, -(-len(x) // batch))  # the end of the first epoch: from here on every example has taken part
    measured = sorted({t for t in range(every, steps + 1, every) if t >= first} | {steps})
    epochs = -(-steps * batch // len(x))
    seeds = [int(c["seed"]) for c in configurations(config)]
    params = init_block(x.shape[1], int(config["width"]), images.classes, int(config.get("depth", 2)), seeds)
    orders = [sgd_batches(len(x), batch, epochs, stream_seed(seed, "order"))[:steps] for seed in seeds]
    batches = [torch.stack(step) for step in zip(*orders)]  # step t: (K, B), run k's batch
    classes = images.classes if config["labels"] == "normal" and config.get("class_matrix", True) else None
    g, by_class = unrolled_sensitivity_block(params, x, y, batches, float(config["lr"]), steps=measured, classes=classes)
    matrices = [per_class_matrix(by_class[k], y, classes) for k in range(len(seeds))] if by_class is not None else None
    for i, t in enumerate(measured):
        metrics = []
        for k in range(len(seeds)):
            g_bar = g[k, : i + 1].mean(dim=0)
            row = {"step": t, "gini_t": gini(g[k, i]), "gini": gini(g_bar), "g_mean": float(g_bar.mean()), "class_matrix": ""}
            if t == steps and matrices is not None:
                row["class_matrix"] = json.dumps(matrices[k].tolist())
            metrics.append(row)
        report(Report(step=t, final=t == steps, metrics=metrics))


def sensitivity_trainable(config: dict, data: MemData) -> None:
    run_sensitivity(config, data, tune_reporter())


# --------------------------------------------------------------------------------------- capacity


def run_capacity(config: dict, data: MemData, report: Callable[[Report], None]) -> None:
    """The block's (width, n_train, seed) runs: each (width, n_train) group as one stacked block of seeds.

    Every run trains for the same budget of ``epochs`` (so every width and size
    is measured at the same point of training); its rows carry the validation
    accuracy (``val_acc`` at that epoch, ``best_val_acc`` the best so far) and
    ``epochs_to_fit``, the first epoch at 100% training accuracy, NaN while it
    has not fit (``fit`` False: censored at the budget). One report per epoch.
    """
    configs = configurations(config)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault((int(c["width"]), int(c["n_train"])), []).append(i)
    epochs = int(config["epochs"])
    histories: list[list[dict]] = [[] for _ in configs]
    for (width, n_train), members in groups.items():
        train_set = training_set(data, config["noise"], float(config["fraction"]), int(config.get("data_seed", 0)), n_train)
        result = train_seeds(train_set, data.val, width=width, seeds=[int(configs[i]["seed"]) for i in members], epochs=epochs,
                             batch_size=int(config["batch_size"]), lr=float(config["lr"]), depth=int(config.get("depth", 2)),
                             device=default_device())
        for k, i in enumerate(members):
            best, fit = 0.0, None
            for row in result.history:
                best = max(best, row["val_acc"][k])
                fit = row["epoch"] if fit is None and row["train_acc"][k] == 1.0 else fit
                histories[i].append({"step": row["epoch"], **{m: row[m][k] for m in ("train_acc", "train_loss", "val_acc", "val_loss")},
                                     "best_val_acc": best, "n_examples": len(train_set),
                                     "epochs_to_fit": float("nan") if fit is None else float(fit), "fit": fit is not None})
    for e in range(epochs):
        report(Report(step=e + 1, final=e == epochs - 1, metrics=[h[e] for h in histories]))


def capacity_trainable(config: dict, data: MemData) -> None:
    run_capacity(config, data, tune_reporter())
