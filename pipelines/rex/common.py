"""Settings and data shared by the Colored MNIST pipelines (cmnist-table, cmnist-search, rex-vs-irm)."""
from __future__ import annotations

from core import methods
from core.data import load_source
from pipelines.engine.spec import Setting


def load_images(settings: dict, data_dir: str | None):
    """The image source: the MNIST-format IDX files of ``--data-dir``, or the embedded scikit-learn digits."""
    return load_source(data_dir)


def risk_reduction_setting(default: str = "method") -> Setting:
    return Setting(
        default, "how the training-domain risks are combined: method (each method's reference code: IRM code mean "
        "for ERM/IRM/grayscale, REx code sum for V-REx/MM-REx/RI), mean, or sum", choices=("method", *methods.REDUCTIONS),
    )


def methods_setting(default: list[str], allowed: list[str] | None = None) -> Setting:
    return Setting(default, "methods to train (core.methods registry names)", choices=tuple(allowed or methods.METHODS))


def reduction_note(frame) -> str:
    """One sentence naming the risk reduction each method's rows used."""
    if "risk_reduction" not in frame or "method" not in frame:
        return ""
    used = {}
    for method, group in frame.groupby("method"):
        for setting in sorted(set(group["risk_reduction"].dropna())):
            used.setdefault(methods.resolve_reduction(method, setting), []).append(methods.get(method).display)
    parts = [f"{'sum' if r == 'sum' else 'mean'} ({', '.join(sorted(set(names)))})" for r, names in sorted(used.items())]
    return "Training-domain risks combined by " + "; ".join(parts) + " (IRM code: mean, REx code: sum; setting risk_reduction).\n\n"
