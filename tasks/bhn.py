"""Trainables of the BHN study (docs bayes.md §d.5-d.8): one trial trains one model (or a toy block) and reports
:class:`~tasks.report.Report` s; the core (core/bhn) knows no Ray.

- :func:`classify_trainable` (bhn-classify): one (model, size, seed); rows ``test_acc``, ``test_err`` (%), ``test_nll``,
  ``ece`` (15 bins), ``best_epoch`` of the best-valid checkpoint's MC predictive.
- :func:`ood_trainable` (bhn-ood): one (model, seed) trained once; its ``block`` entries are the evaluations, one
  result row each: ``{ood_set, score}`` (AUROC / AUPR-in / AUPR-out ×100, the in-distribution test set positive),
  ``{ood_set: "errors", score}`` (right vs wrong), ``{ood_set: "fgs", eps, score}`` (fast gradient sign on the MC
  predictive: ``adv_acc`` and the clean-vs-attacked ``auroc``, ``err_auroc``). Every row also holds the model's
  clean ``test_acc``, ``test_nll``, ``ece``.
- :func:`active_trainable` (bhn-active): one (model, acquisition, seed) active-learning loop; a Report per
  acquisition (step = labels); the final row holds the whole curve (``curve``: JSON [[labels, test_acc], ...]),
  ``mean_acc_100_500``, ``labels_to_90`` / ``labels_to_95``, ``auc``.
- :func:`toy_trainable` (bhn-toy): a block of seeds of one (problem, posterior) fitted one after the other
  (core.bhn.toy); ``p_a_pos``, ``kl_grid``, ``elbo`` (product), ``mean_rel_err``, ``cov_rel_err`` (linear) and a
  2-D histogram of q's samples for the report's density plots.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from core.bhn import calibration
from core.bhn import models as bm
from core.bhn import train as btrain
from tasks.report import Report, configurations, tune_reporter

PREDICT_CHUNK = 1000  # inputs per MC pass (bounds the (S, N, hidden) activations)


# ============================================================================ data


@dataclass(frozen=True)
class Images:
    """Flattened images ``x`` (N, 784) float32 in [0, 1] and labels ``y`` (N,), as core.bhn.data.load_images returns
    them; ``extra``: OOD sets read from --data-dir (paper presets), by name."""

    name: str
    x: np.ndarray
    y: np.ndarray
    description: str
    extra: tuple = ()  # ((name, array), ...): hashable, picklable

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.x).tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        for name, array in self.extra:
            h.update(name.encode())
            h.update(np.ascontiguousarray(array).tobytes())
        return f"{self.name}:{h.hexdigest()[:12]}"


def load_images(settings: dict, data_dir: str | None, extra_sets: tuple[str, ...] = ()) -> Images:
    """The image source of a bhn pipeline: an MNIST-format IDX directory (--data-dir) or, without one, the embedded
    deformed digits; ``extra_sets`` (paper OOD sets) are read from the same directory (DataError, one line, when
    missing). Too few images for the split: DataError."""
    from pathlib import Path

    from core.bhn import data as bdata
    from core.data import DataError

    x, y = bdata.load_images(data_dir)  # a missing directory: DataError there
    need = sum(int(settings.get(k, 0)) for k in ("n_train", "n_valid", "n_test"))
    name = "deformed-digits" if data_dir is None else "mnist"
    if len(x) < need:
        raise DataError(f"{name}: {len(x):,} images, the split needs {need:,} (lower n_train / n_valid / n_test)")
    where = "the embedded deformed digits (scikit-learn's digits at 28x28 under seeded deformations)" if data_dir is None \
        else f"MNIST-format IDX from {Path(data_dir).resolve()}"
    extra = tuple((s, np.asarray(bdata.ood_set(s, None, 0, data_dir))) for s in extra_sets)
    return Images(name, np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64), f"{where}: {len(x):,} images", extra)


def image_size_of(config: dict) -> int:
    return int(config.get("image_size", 28))


def as_images(x: np.ndarray, size: int) -> torch.Tensor:
    """(N, 784) in [0, 1] -> (N, size, size) float32 (14: 2x2 average pooling)."""
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).view(-1, 28, 28)
    if size == 28:
        return t
    factor = 28 // size
    return torch.nn.functional.avg_pool2d(t[:, None], factor)[:, 0]


# ============================================================================ models


def spec_of(config: dict, classes: int = 10) -> bm.BHNSpec:
    """The BHNSpec of a config's model keys (posterior "-" of the non-bhn models: the spec's default, unused)."""
    size = image_size_of(config)
    posterior = config.get("posterior", "-")
    return bm.BHNSpec(arch=str(config.get("arch", "mlp")), in_shape=(size, size), hidden=tuple(int(h) for h in config["hidden"]),
                      classes=classes, activation=str(config["activation"]), model=str(config["model"]),
                      posterior="mean-field" if posterior in ("-", None) else str(posterior), coupling=int(config.get("coupling", 0)),
                      flow_hidden=int(config.get("flow_hidden", 200)), dropout=float(config.get("dropout", 0.5)),
                      prior_lambda=float(config.get("prior_lambda", 1.0)), noise_std=float(config.get("noise_std", 1.0)),
                      l2=float(config.get("l2", 0.0)), members=int(config.get("members", 5)))


def train_model(config: dict, spec: bm.BHNSpec, x: torch.Tensor, y: torch.Tensor, x_valid, y_valid, seed: int, epochs: int,
                progress=None, model: bm.BHNModel | None = None, optimizer: torch.optim.Optimizer | None = None,
                tail: bool = False) -> tuple[bm.BHNModel, btrain.FitResult]:
    """Init (data-dependent, on the first 64 training images) unless ``model`` is given (warm start, with its
    ``optimizer`` when given), then fit (``tail``: keep each epoch's partial last minibatch)."""
    if model is None:
        model = bm.init_model(spec, x[: bm.INIT_BATCH], seed)
    result = btrain.fit(model, spec, x, y, x_valid, y_valid, epochs, float(config["lr"]), int(config["batch"]), seed,
                        valid_samples=int(config.get("valid_samples", 20)), anneal=bool(config.get("anneal", False)),
                        progress=progress, optimizer=optimizer, tail=tail)
    return model, result


@torch.no_grad()
def predict(model: bm.BHNModel, x: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """MC probabilities (S, N, C), ``PREDICT_CHUNK`` inputs at a time, from a generator seeded by ``seed``."""
    model.eval()
    gen = torch.Generator().manual_seed(int(seed))
    return torch.cat([bm.sample_probs(model, x[i:i + PREDICT_CHUNK], samples, gen) for i in range(0, len(x), PREDICT_CHUNK)], 1)


def prob_metrics(probs: torch.Tensor, y: torch.Tensor) -> dict:
    """test_acc, test_err (%), test_nll (nats), ece of the MC predictive mean of ``probs`` (S, N, C)."""
    mean = probs.mean(0)
    acc = float((mean.argmax(-1) == y).double().mean())
    return {"test_acc": acc, "test_err": 100 * (1 - acc), "test_nll": calibration.nll(mean, y), "ece": calibration.ece(mean, y)}


def epoch_reporter(report, count: int, keys=("valid_acc", "loss")):
    """fit's ``progress``: a non-final Report per epoch, the same metrics for each of the trial's ``count`` rows."""
    def progress(epoch: int, entry: dict) -> None:
        metrics = {k: float(entry[k]) for k in keys if k in entry}
        report(Report(step=epoch + 1, final=False, metrics=[dict(metrics) for _ in range(count)]))
    return progress


def split_of(config: dict, data: Images, exclude: int | None = None, n_valid: int | None = None):
    """core.bhn.data.make_split of the config's sizes and split seed."""
    from core.bhn import data as bdata

    sizes = (int(config["n_train"]), int(config["n_valid"] if n_valid is None else n_valid), int(config["n_test"]))
    return bdata.make_split(data.x, data.y, sizes=sizes, seed=int(config.get("split_seed", 0)), exclude=exclude)


# ============================================================================ bhn-classify


def classify_run(config: dict, data: Images, report) -> dict:
    """Train one model on the first ``labels`` training images; the best-valid checkpoint's test metrics."""
    start = time.time()
    torch.manual_seed(0)
    split = split_of(config, data)
    size, n = image_size_of(config), int(config["labels"])
    x, y = as_images(split.x_train[:n], size), torch.as_tensor(split.y_train[:n])
    x_valid, y_valid = as_images(split.x_valid, size), torch.as_tensor(split.y_valid)
    spec = spec_of(config, split.num_classes)
    seed = int(config["seed"])
    model, result = train_model(config, spec, x, y, x_valid, y_valid, seed, int(config["epochs"]), epoch_reporter(report, 1))
    probs = predict(model, as_images(split.x_test, size), int(config["test_samples"]), 7_919 * seed + 1)
    row = prob_metrics(probs, torch.as_tensor(split.y_test))
    last = result.history[-1] if result.history else {}
    best = result.history[result.best_epoch] if result.best_epoch >= 0 else last
    row.update(best_epoch=float(result.best_epoch), valid_acc=float(best.get("valid_acc", math.nan)),
               train_nll=float(last.get("nll", math.nan)), train_kl=float(last.get("kl", math.nan)), wall_s=time.time() - start)
    report(Report(step=int(config["epochs"]), final=True, metrics=[row]))
    return row


def classify_trainable(config: dict, data: Images) -> None:
    """Ray Tune function trainable for bhn-classify."""
    classify_run(config, data, tune_reporter())


# ============================================================================ bhn-ood

ERRORS, FGS = "errors", "fgs"


def ood_run(config: dict, data: Images, report) -> list[dict]:
    """Train one model without the held-out class; evaluate every block entry (OOD set / errors / FGS ε, score)."""
    from core.bhn import adversarial
    from core.bhn import data as bdata
    from core.bhn import ood

    start = time.time()
    torch.manual_seed(0)
    evals = configurations(config)
    split = split_of(config, data, exclude=int(config["exclude"]))
    size, seed, samples = image_size_of(config), int(config["seed"]), int(config["mc_samples"])
    x, y = as_images(split.x_train, size), torch.as_tensor(split.y_train)
    x_valid, y_valid = as_images(split.x_valid, size), torch.as_tensor(split.y_valid)
    spec = spec_of(config, split.num_classes)
    model, result = train_model(config, spec, x, y, x_valid, y_valid, seed, int(config["epochs"]), epoch_reporter(report, len(evals)))
    x_test, y_test = as_images(split.x_test, size), torch.as_tensor(split.y_test)
    in_probs = predict(model, x_test, samples, 7_919 * seed + 1)
    clean = dict(prob_metrics(in_probs, y_test), best_epoch=float(result.best_epoch))
    extra = dict(data.extra)
    needed = {e["ood_set"] for e in evals} - {ERRORS, FGS}
    out_probs = {}
    for k, name in enumerate(sorted(needed)):
        images = extra[name] if name in extra else bdata.ood_set(name, split, 1_000 + seed)
        out_probs[name] = predict(model, as_images(np.asarray(images, dtype=np.float32), size), samples, 7_919 * seed + 2 + k)
    fgs_rows = {}
    eps = sorted({float(e["eps"]) for e in evals if e["ood_set"] == FGS})
    if eps:
        n = int(config["fgs_images"])
        gen = torch.Generator().manual_seed(7_919 * seed + 99)
        attack = lambda xb: bm.sample_probs(model, xb, int(config["fgs_attack_samples"]), gen)
        evaluate = lambda xb: bm.sample_probs(model, xb, int(config["fgs_eval_samples"]), gen)
        scores = sorted({e["score"] for e in evals if e["ood_set"] == FGS})
        model.eval()
        fgs_rows = {round(r["eps"], 12): r for r in adversarial.fgs_eval(attack, evaluate, x_test[:n], y_test[:n], eps, scores)}
    rows = []
    for e in evals:
        row = dict(clean)
        name, score = e["ood_set"], e["score"]
        if name == ERRORS:
            row.update(_safe(ood.error_detection, in_probs, y_test, score))
        elif name == FGS:
            r = fgs_rows[round(float(e["eps"]), 12)]
            row.update(adv_acc=r["acc"], auroc=r.get(f"auroc_{score}", math.nan), err_auroc=r.get(f"err_auroc_{score}", math.nan),
                       clean_fgs_acc=fgs_rows.get(0.0, {}).get("acc", math.nan))
        else:
            row.update(ood.detection(ood.confidence(in_probs, score), ood.confidence(out_probs[name], score)))
        row["wall_s"] = time.time() - start
        rows.append(row)
    report(Report(step=int(config["epochs"]), final=True, metrics=rows))
    return rows


def _safe(fn, *args) -> dict:
    """A detection whose two sides exist, else NaNs (e.g. error detection with no misclassified input)."""
    try:
        return fn(*args)
    except ValueError:
        return {"auroc": math.nan, "aupr_in": math.nan, "aupr_out": math.nan}


def ood_trainable(config: dict, data: Images) -> None:
    """Ray Tune function trainable for bhn-ood."""
    ood_run(config, data, tune_reporter())


# ============================================================================ bhn-active


def curve_summary(curve: list[tuple[int, float]]) -> dict:
    """mean_acc_100_500 (mean accuracy of the points with 100-500 labels), auc (mean over the curve), labels_to_90 /
    labels_to_95 (the first label count at or above; NaN if never)."""
    labels = np.array([c[0] for c in curve], dtype=float)
    acc = np.array([c[1] for c in curve], dtype=float)
    window = (labels >= 100) & (labels <= 500)
    first = lambda level: float(labels[np.argmax(acc >= level)]) if (acc >= level).any() else math.nan
    return {"mean_acc_100_500": float(acc[window].mean()) if window.any() else math.nan, "auc": float(acc.mean()),
            "labels_to_90": first(0.90), "labels_to_95": first(0.95)}


def active_values_fn(model: bm.BHNModel, x_all: torch.Tensor, acquisition: str, samples: int, gen: torch.Generator):
    """core.bhn.active's ``values_fn`` for one model: acquisition values of MC probabilities of the scored images. A
    deterministic model's var_ratio is the softmax's 1 − max probability (its samples are copies; bayes.md §d.7)."""
    from core.bhn import active as bactive
    from core.bhn import ood

    def probs_fn(idx: np.ndarray) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([bm.sample_probs(model, x_all[torch.as_tensor(idx[i:i + PREDICT_CHUNK])], samples, gen)
                              for i in range(0, len(idx), PREDICT_CHUNK)], 1)

    if acquisition == "var_ratio" and model.spec.model == "map":
        return lambda idx: 1 - ood.confidence(probs_fn(idx)[:1], "max_prob")
    return bactive.probs_values_fn(probs_fn, acquisition)


def active_run(config: dict, data: Images, report) -> dict:
    """The reference's loop: initial labels, train, then per acquisition: score a subset, label the best, retrain."""
    from core.bhn import active as bactive

    start = time.time()
    torch.manual_seed(0)
    split = split_of(config, data, n_valid=0)
    size, seed = image_size_of(config), int(config["seed"])
    x_all, y_all = as_images(split.x_train, size), torch.as_tensor(split.y_train)
    x_test, y_test = as_images(split.x_test, size), torch.as_tensor(split.y_test)
    spec = spec_of(config, split.num_classes)
    state = bactive.initial_state(np.asarray(split.y_train), int(config["candidates"]), 5_001 + seed, int(config["initial_per_class"]),
                                  split.num_classes)
    rng = np.random.default_rng(10_007 * seed + 3)
    gen = torch.Generator().manual_seed(7_919 * seed + 5)
    epochs, model, optimizer, curve = int(config["epochs"]), None, None, []
    for step in range(int(config["steps"]) + 1):
        if step > 0:
            values = active_values_fn(model, x_all, str(config["acquisition"]), int(config["mc_samples"]), gen)  # None: random
            state, _ = bactive.acquire(state, values, int(config["acquire"]), int(config["subset"]), rng, str(config["pool"]))
            if config["params_reset"] == "random":
                model = None
        idx = torch.as_tensor(state.labelled)
        if model is None:  # a fresh model gets a fresh Adam; a warm start keeps both (the reference's train_func)
            model = bm.init_model(spec, x_all[idx][: bm.INIT_BATCH], 1_000 * seed + step)
            optimizer = btrain.make_optimizer(model, float(config["lr"]))
        model, _ = train_model(config, spec, x_all[idx], y_all[idx], None, None, 1_000 * seed + step, epochs, model=model,
                               optimizer=optimizer, tail=True)  # dk_AL.py's train_model keeps the partial batch
        acc = prob_metrics(predict(model, x_test, int(config["test_samples"]), 7_919 * seed + 11), y_test)["test_acc"]
        curve.append((len(state.labelled), acc))
        if step < int(config["steps"]):
            report(Report(step=len(state.labelled), final=False, metrics=[{"labels": float(len(state.labelled)), "test_acc": acc}]))
    row = {"labels": float(curve[-1][0]), "test_acc": curve[-1][1], "curve": json.dumps([[n, round(a, 6)] for n, a in curve]),
           "unique_labels": float(len(np.unique(state.labelled))), "pool_left": float(len(state.pool)), **curve_summary(curve),
           "wall_s": time.time() - start}
    report(Report(step=int(curve[-1][0]), final=True, metrics=[row]))
    return row


def active_trainable(config: dict, data: Images) -> None:
    """Ray Tune function trainable for bhn-active."""
    active_run(config, data, tune_reporter())


# ============================================================================ bhn-toy

TOY_BINS = 64
TOY_BOX = 4.0  # the product net's (a, b) plots: [-4, 4]², core.bhn.toy.grid_posterior's default window


def toy_histogram(theta: np.ndarray, bins: int = TOY_BINS, box: float = TOY_BOX) -> np.ndarray:
    """Share of samples (a, b) per cell of [−box, box]² (rows = a, columns = b, as Grid.log_p)."""
    hist, _, _ = np.histogram2d(theta[:, 0], theta[:, 1], bins=bins, range=[[-box, box], [-box, box]])
    return hist / max(1, len(theta))


def toy_run(config: dict, report) -> list[dict]:
    """Fit each configuration of the block (seeds) in turn (core.bhn.toy.fit_toy); one final Report with every row."""
    from core.bhn import hypernet as hn
    from core.bhn import toy as btoy
    from core.naf.metrics import encode_grid

    rows = []
    for c in configurations(config):
        start = time.time()
        seed = int(c["seed"])
        problem = btoy.make_problem(str(c["problem"]), seed)
        fit = btoy.fit_toy(problem, str(c["posterior"]), int(c["steps"]), seed, lr=float(c["lr"]), samples=int(c["samples"]),
                           coupling=int(c["coupling"]), flow_hidden=int(c["flow_hidden"]), eval_samples=int(c["eval_samples"]),
                           decay=bool(c.get("decay", True)), temper=float(c.get("temper", 0.0)),
                           init_log_scale=float(c["init_log_scale"]) if "init_log_scale" in c else None)
        row = {k: float(v) for k, v in fit.metrics.items()}
        if problem.name == "product":
            if fit.hypernet is not None:
                with torch.no_grad():
                    theta, _ = hn.hypernet_sample(fit.hypernet, 20_000, torch.Generator().manual_seed(seed + 2))
                theta = theta.double().numpy()
            else:
                theta = fit.point.double().numpy()[None]
            row["hist"] = encode_grid(toy_histogram(theta))
            row["one_branch"] = float(min(row["p_a_pos"], 1 - row["p_a_pos"]) < 0.05)
            row["both_branches"] = float(0.3 <= row["p_a_pos"] <= 0.7)
        row["wall_s"] = time.time() - start
        rows.append(row)
    report(Report(step=int(config["steps"]), final=True, metrics=rows))
    return rows


def toy_trainable(config: dict, data=None) -> None:
    """Ray Tune function trainable for bhn-toy (the problems are generated from each seed: ``data`` is unused)."""
    toy_run(config, tune_reporter())
