"""What the bhn pipelines share: the model / posterior settings and the variants they make, the MNIST split
settings and checks, table cells, display names and the published-row tags.

A *variant* is one trained model kind: ``{"model", "posterior", "coupling"}``. ``model`` is BHNSpec's model
(map, mcdropout, bhn, ensemble); ``posterior`` is BHNSpec's posterior for ``bhn`` (mean-field = coupling 0, the
Bayes-by-backprop baseline; realnvp / iaf / dsf with ``coupling`` layers) and ``"-"`` for the others (a string,
never None, so pandas groups it).
"""
from __future__ import annotations

from core.bhn import models as bmodels
from pipelines.engine.spec import GensweepError, Setting
from pipelines.naf.common import cell  # mean ± s.e. over the finite values (one home for the cell format)

MODELS = tuple(bmodels.MODELS)
POSTERIORS = tuple(bmodels.POSTERIORS)  # the image nets' hypernets (hypernet.py's "linear": toys only)
NO_POSTERIOR = "-"
NOT_ENTERED = "published: not entered"  # the BHN paper's tables: core.bhn.hparams.BHN_PUBLISHED is None [–]
DETERMINISTIC = ("map",)  # one prediction: BALD and mean std are identically 0 (bayes.md §d.7)

__all__ = ["cell", "variants", "variant_label", "model_settings", "split_settings", "MODELS", "POSTERIORS"]


def models_setting(default: list[str]) -> Setting:
    return Setting(default, "models: map (point estimate), mcdropout (p = dropout), bhn (hypernet over the WN scales; "
                   "its posteriors below), ensemble (members MAP nets)", choices=MODELS)


def posteriors_setting(default: list[str]) -> Setting:
    return Setting(default, "bhn posteriors: mean-field (coupling 0, Bayes by backprop), realnvp, iaf, dsf (NAF's "
                   "transformer in the hypernet)", choices=POSTERIORS)


def coupling_setting(default: list[int]) -> Setting:
    return Setting(default, "flow layers of the realnvp / iaf / dsf hypernet (list; 0 leaves the elementwise affine "
                   "layer only, i.e. mean-field)", ge=0, item=int)


def model_settings(hidden: tuple[int, ...], activation: str, models: list[str], posteriors: list[str], coupling: list[int],
                   l2: float = 0.0) -> dict[str, Setting]:
    """The model settings every image pipeline has (defaults per pipeline; ``hidden`` = layers of equal width)."""
    if len(set(hidden)) != 1:
        raise ValueError(f"hidden layers of one width expected, got {hidden}")
    return {
        "models": models_setting(models),
        "posteriors": posteriors_setting(posteriors),
        "coupling": coupling_setting(coupling),
        "hidden": Setting(int(hidden[0]), "hidden units per layer of the weight-normed primary MLP", ge=1),
        "layers": Setting(len(hidden), "hidden layers of the primary MLP", ge=1),
        "activation": Setting(activation, "primary net activation", choices=("relu", "gelu")),
        "flow_hidden": Setting(200, "hidden units of each coupling / IAF layer of the hypernet (reference: 200)", ge=1),
        "dropout": Setting(0.5, "mcdropout's dropout probability (reference: 0.5)", gt=0, le=0.95),
        "prior_lambda": Setting(1.0, "precision λ of the N(0, 1/λ) prior on the WN scales (reference lbda: 1)", gt=0),
        "noise_std": Setting(1.0, "std of the hypernet's input noise ε (reference: 1; dk_anomaly_detection: 0.01)", gt=0),
        "l2": Setting(l2, "weight decay of map and mcdropout (dk_anomaly_detection's mlp: 1e-5)", ge=0),
        "members": Setting(5, "MAP nets of an ensemble (deep ensembles: 5)", ge=2),
    }


MODEL_KEYS = ("activation", "flow_hidden", "dropout", "prior_lambda", "noise_std", "l2", "members")


def variants(settings: dict) -> list[dict]:
    """One dict per model kind the settings train: bhn once per (posterior, coupling), mean-field once (coupling 0)."""
    out = []
    for model in settings["models"]:
        if model != "bhn":
            out.append({"model": model, "posterior": NO_POSTERIOR, "coupling": 0})
            continue
        for posterior in settings["posteriors"]:
            for coupling in ([0] if posterior == "mean-field" else settings["coupling"]):
                out.append({"model": model, "posterior": posterior, "coupling": int(coupling)})
    return out


def model_keys(settings: dict) -> dict:
    """The model settings a config carries; ``hidden`` as the list of layer widths (JSON-able)."""
    return {"hidden": [settings["hidden"]] * settings["layers"], **{k: settings[k] for k in MODEL_KEYS}}


def variant_label(row) -> str:
    """map, mcdropout, ensemble-5, bhn mean-field, bhn realnvp ×4 (from a config dict or a result row)."""
    model, posterior, coupling = row["model"], row.get("posterior", NO_POSTERIOR), int(row.get("coupling", 0) or 0)
    if model == "ensemble":
        return f"ensemble-{int(row.get('members', 5))}"
    if model != "bhn":
        return str(model)
    return "bhn mean-field" if posterior == "mean-field" else f"bhn {posterior} ×{coupling}"


def variant_order(label: str) -> tuple:
    """Table order: map, mcdropout, ensemble, then bhn mean-field and the flows."""
    head = label.split()[0].split("-")[0]
    rank = {"map": 0, "mcdropout": 1, "ensemble": 2, "bhn": 3}.get(head, 9)
    return rank, 0 if "mean-field" in label else 1, label


def check_variants(settings: dict) -> None:
    """bhn asked with no posterior that gives a model (only coupling-0 flows) is fine; an empty product is not."""
    if not variants(settings):
        raise GensweepError("bad value for models: no model to train")


# ------------------------------------------------------------------------------------------- data splits


def split_settings(n_train: int, n_valid: int, n_test: int) -> dict[str, Setting]:
    """Sizes of the train / validation / test parts of the image source (smoke, cpu: MNIST's test split from
    --data-dir, or the embedded deformed digits without it; paper: MNIST 50k/10k/10k)."""
    return {
        "n_train": Setting(n_train, "training (or pool) images", ge=10),
        "n_valid": Setting(n_valid, "validation images (best-valid checkpoint)", ge=1),
        "n_test": Setting(n_test, "test images", ge=1),
        "split_seed": Setting(0, "seed of the shuffle before the split", ge=0),
    }
