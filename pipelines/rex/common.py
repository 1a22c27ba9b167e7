"""Settings and data shared by the Colored MNIST pipelines (cmnist-table, cmnist-search, rex-vs-irm)."""
from __future__ import annotations

from core import methods
from core.cmnist.sources import EMBEDDED_IMAGES, MIN_EMBEDDED_IMAGES, load_source
from pipelines.engine import reports
from pipelines.engine.derived import retrain_best
from pipelines.engine.spec import Setting, Stage


EMBEDDED_SETTINGS = {
    "embedded_images": Setting(EMBEDDED_IMAGES, "images of the embedded deformed digits, the data when there is no "
                               f"--data-dir (core.cmnist.sources; at least {MIN_EMBEDDED_IMAGES:,}: every source digit "
                               "drawn once)", ge=MIN_EMBEDDED_IMAGES),
}


def load_images(settings: dict, data_dir: str | None):
    """The image source: the MNIST-format IDX files of ``--data-dir``, or ``embedded_images`` embedded deformed digits."""
    return load_source(data_dir, settings["embedded_images"])


def risk_reduction_setting(default: str = "method") -> Setting:
    return Setting(
        default, "how the training-domain risks are combined: method (each method's reference code: IRM code mean "
        "for ERM/IRM/grayscale, REx code sum for V-REx/MM-REx/RI), mean, or sum", choices=("method", *methods.REDUCTIONS),
    )


def methods_setting(default: list[str], allowed: list[str] | None = None) -> Setting:
    return Setting(default, "methods to train (core.methods registry names)", choices=tuple(allowed or methods.METHODS))


def reduction_keys(method: str, setting: str) -> dict:
    """A config's reduction: ``risk_reduction`` the one it trains with (mean or sum), ``risk_reduction_setting`` the setting's word."""
    return {"risk_reduction": methods.resolve_reduction(method, setting), "risk_reduction_setting": setting}


def reduction_note(frame) -> str:
    """One sentence naming the risk reduction each method's rows used (the resolved ``risk_reduction`` column)."""
    if "risk_reduction" not in frame or "method" not in frame:
        return ""
    used = {}
    for method, group in frame.groupby("method"):
        for reduction in sorted(set(group["risk_reduction"].dropna())):
            used.setdefault(methods.resolve_reduction(method, reduction), []).append(methods.get(method).display)
    parts = [f"{'sum' if r == 'sum' else 'mean'} ({', '.join(sorted(set(names)))})" for r, names in sorted(used.items())]
    return "Training-domain risks combined by " + "; ".join(parts) + " (IRM code: mean, REx code: sum; setting risk_reduction).\n\n"


RETRAIN_SETTINGS = {
    "retrain_top": Setting(0, "stage retrain: re-train the best k configurations of each search study (by its selection "
                           "metric) with retrain_seeds seeds, each on freshly drawn domains (0: no retrain stage)", ge=0),
    "retrain_seeds": Setting(3, "stage retrain: seeds (model init and domains) per re-trained configuration", ge=1),
}


def retrain_stage(settings: dict, trainable, metric: str, label) -> list[Stage]:
    """Stage retrain (when ``retrain_top`` > 0): the best configurations of stage search, re-trained with new seeds.

    Seed s sets both the model seed and ``data_seed`` (domains redrawn per run,
    as the REx scripts' restarts do), so the re-trained mean measures the
    configuration, not one draw of its domains.
    """
    if not settings["retrain_top"]:
        return []
    plan = retrain_best("search", metric, "max", top=settings["retrain_top"], seeds=settings["retrain_seeds"],
                        group_by=("study",), seed_keys=("seed", "data_seed"))
    return [Stage("retrain", trainable, plan, metric="test_acc", label=label)]


def retrain_table(frame, search, describe) -> str:
    """Per re-trained configuration: its search study, rank, ``describe(row)``, the value it was selected on, and
    train / test accuracy (%) mean ± std over its seeds."""
    rows = []
    selected = [c for c in frame.columns if c.startswith("retrain_source_")]
    for (key, rank), group in frame.groupby(["retrain_of", "retrain_rank"], sort=False):
        source = search[search["trial_key"] == key]
        study = str(source["study"].iloc[0]).split("/search/", 1)[-1] if len(source) and "study" in source else "–"
        value = next((group[c].iloc[0] for c in selected if group[c].notna().any()), float("nan"))
        rows.append([study, int(rank), describe(group.iloc[0]), f"{100 * value:.1f}",
                     reports.pm(*reports.mean_std(100 * group["train_acc"])), reports.pm(*reports.mean_std(100 * group["test_acc"])),
                     len(group)])
    rows.sort(key=lambda r: (r[0], r[1]))
    return reports.markdown_table(["study", "rank", "configuration", "selected on (%)", "train acc", "test acc", "seeds"], rows)
