"""What the memorization pipelines (thesis chapter 3) share: the data settings and loader, training settings,
the chapter's training protocol (§3.2) and how a report states where a sweep departs from it, plot helpers."""
from __future__ import annotations

from pathlib import Path

from core.data import DataError
from core.memorization import data as mdata
from core.memorization import hparams
from pipelines.engine.spec import Setting
from tasks.memorization import MemData

DATASETS = ("auto", "digits", "mnist", "cifar10")


def data_settings(n_train: int, n_val: int) -> dict[str, Setting]:
    """dataset, n_train, n_val and split_seed settings (defaults fit the embedded digits: 1,797 images)."""
    return {
        "dataset": Setting("auto", "digits (embedded), mnist (IDX dir) or cifar10 (python batches); auto: digits without "
                           "--data-dir, else cifar10 if the dir holds its batches, else mnist", choices=DATASETS),
        "n_train": Setting(n_train, "training examples (0: all but the validation set)", ge=0),
        "n_val": Setting(n_val, "validation examples (never corrupted)", ge=1),
        "split_seed": Setting(0, "seed of the random train/validation split", ge=0),
    }


def _resolve(dataset: str, data_dir: str | None) -> str:
    if dataset != "auto":
        return dataset
    if data_dir is None:
        return "digits"
    directory = Path(data_dir)
    if (directory / "test_batch").exists() or (directory / "cifar-10-batches-py").is_dir():
        return "cifar10"
    return "mnist"


def load_data(settings: dict, data_dir: str | None, downscale: int = 1) -> MemData:
    """The clean train / validation sets of the settings (DataError with one line when files or sizes do not fit)."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    name = _resolve(settings["dataset"], data_dir)
    if name == "digits" and data_dir is not None and settings["dataset"] == "digits":
        data_dir = None  # the embedded set needs no directory
    try:
        train, val = mdata.load_images(name, data_dir, n_train=settings["n_train"] or None, n_val=settings["n_val"],
                                       seed=settings["split_seed"])
    except ValueError as exc:  # split sizes larger than the data
        raise DataError(f"{name}: {exc} (lower n_train / n_val)") from None
    if settings["n_train"] and len(train) < settings["n_train"]:
        raise DataError(f"{name}: only {len(train)} training examples, n_train={settings['n_train']} asked (lower n_train)")
    if downscale > 1:
        train, val = mdata.downscale(train, downscale), mdata.downscale(val, downscale)
    return MemData(train, val)


CHAPTER = hparams.CHAPTER  # thesis §3.2's training protocol, per model (core.memorization.hparams)


def protocol(row, expected: dict | None = None, varied: tuple[str, ...] = ()) -> str:
    """One sentence: how a sweep's models were trained (from a result row) and where that departs from §3.2.

    ``expected`` overrides the chapter's values for this experiment (e.g. one epoch for Fig 3.1, 16 units for Fig 3.3);
    ``varied`` names what the sweep varies (the capacity study's width), neither printed from the row nor checked.
    Keys a row lacks count as the trainables' defaults (an MLP, SGD, no momentum, a constant learning rate).
    """
    get = lambda key, default=None: row[key] if key in row and row[key] == row[key] else default  # NaN: absent
    model = str(get("model", "mlp"))
    used = {"width": get("width"), "optimizer": get("optimizer", "sgd"), "lr": get("lr"), "momentum": get("momentum", 0.0),
            "lr_step": get("lr_step", 0), "epochs": get("epochs")}
    wanted = {k: v for k, v in {**CHAPTER[model], **(expected or {})}.items() if k not in varied}
    used.update({k: "(varied)" for k in varied})
    shape = "the small CNN" if model == "cnn" else f"MLP 2 x {used['width']}"
    schedule = f", lr halved every {used['lr_step']} epochs" if used["lr_step"] else ""
    if used["epochs"] is None:
        length = f"{get('steps')} steps"
    else:
        length = f"{used['epochs']} epoch" if int(used["epochs"]) == 1 else f"{used['epochs']} epochs"
    text = (f"{shape}, {used['optimizer']} lr {used['lr']:g}, momentum {float(used['momentum']):g}{schedule}, "
            f"batch {get('batch_size', '?')}, {length}")
    off = [f"{k} {used[k]} (chapter: {v})" for k, v in wanted.items() if used.get(k) is not None and used[k] != v and not (
        isinstance(v, float) and isinstance(used[k], (int, float)) and float(used[k]) == v)]
    verdict = "as §3.2 prescribes" if not off else "departs from §3.2 in " + ", ".join(off)
    return f"Training: {text}; {verdict} (the chapter gives no batch size)."


def training_settings(batch_size: int, width: int = hparams.MLP["width"], epochs: int = hparams.MLP["epochs"],
                      lr: float = hparams.MLP["lr"], optimizer: str = hparams.MLP["optimizer"]) -> dict[str, Setting]:
    """model, width, epochs, batch_size, optimizer, lr, momentum, lr_step, seeds, data_seed; defaults: §3.2's MLP."""
    out = {
        "model": Setting("mlp", "mlp (2 ReLU layers of `width`) or cnn (the small AlexNet-style CNN)", choices=("mlp", "cnn")),
        "width": Setting(width, f"hidden units per MLP layer ({hparams.MLP['width']} in the paper)", ge=1),
        "epochs": Setting(epochs, "training epochs", ge=1),
        "batch_size": Setting(batch_size, "minibatch size", ge=1),
        "optimizer": Setting(optimizer, "sgd (the paper's) or adam (fits noise faster: smoke)", choices=("sgd", "adam")),
        "lr": Setting(lr, f"learning rate (paper: {hparams.MLP['lr']:g})", gt=0),
        "momentum": Setting(hparams.MLP["momentum"], f"SGD momentum (paper: {hparams.MLP['momentum']:g} for the MLP, "
                            f"{hparams.CNN['momentum']:g} for the CNN)", ge=0, le=1),
        "lr_step": Setting(hparams.MLP["lr_step"], "halve the learning rate every this many epochs (paper CNN: "
                           f"{hparams.CNN['lr_step']}; 0: constant)", ge=0),
        "seeds": Setting(1, "seeds per configuration (model init, data order, dropout/LASS noise)", ge=1),
        "data_seed": Setting(0, "seed of the noise datasets (which examples, which noise)", ge=0),
    }
    return out


def lass_settings() -> dict[str, Setting]:
    """The LASS search of CSR and adversarial training; defaults: the reference code's (``lass_tf.py``)."""
    return {
        "lass_iters": Setting(hparams.LASS_ITERS, f"LASS iterations at most (reference code: {hparams.LASS_ITERS})", ge=1),
        "lass_min_new": Setting(hparams.LASS_MIN_NEW, "stop a LASS search once an iteration finds fewer new critical points "
                                f"than this (reference code: {hparams.LASS_MIN_NEW}; 0: never early)", ge=0),
    }


def training_keys(settings: dict) -> dict:
    keys = ("model", "width", "epochs", "batch_size", "optimizer", "lr", "momentum", "lr_step", "data_seed")
    return {k: settings[k] for k in keys}


def curve_columns(frame, curves, keys: list[str]):
    """The curves joined with the trial columns ``keys`` (by trial_key)."""
    keep = ["trial_key"] + [k for k in keys if k in frame]
    return curves.merge(frame[keep], on="trial_key")


def noise_label(noise: str, fraction: float) -> str:
    return "real" if noise == "real" or fraction == 0 else f"{noise} {fraction:g}"
