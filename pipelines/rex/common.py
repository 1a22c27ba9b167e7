"""Settings and data shared by the Colored MNIST pipelines (cmnist-table, cmnist-search, rex-vs-irm)."""
from __future__ import annotations

from core import methods
from core.cmnist.sources import EMBEDDED_IMAGES, MIN_EMBEDDED_IMAGES, load_source
from pipelines.engine import reports
from pipelines.engine.followup import retrain_best
from pipelines.engine.spec import GensweepError, Setting, Stage
from pipelines.rex import selection


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


def check_retrain(settings: dict) -> None:
    """Refuse ``retrain_top`` > 0 when ``stages`` leaves out the search it re-trains from (it would be ignored)."""
    if settings["retrain_top"] and "search" not in settings.get("stages", ["search"]):
        raise GensweepError(f"retrain_top {settings['retrain_top']} re-trains the search stage's best configurations, "
                            f"but stages ({', '.join(settings['stages'])}) has no search: add search to stages, or leave "
                            "retrain_top at 0")


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


HOLDOUT_SETTING = Setting(0.0, "stage search: share of each training domain held out for training-domain validation "
                          "(DomainBed's rule beside min(train, test); 0: none, as the IRM and REx code)", ge=0.0, le=0.5,
                          opt_in=True)


def holdout_keys(settings: dict) -> dict:
    """``holdout`` for a config, only when set (configs and trial keys of sweeps without it stay as they were)."""
    return {"holdout": float(settings["holdout"])} if settings.get("holdout") else {}


def validation_table(frame, curves) -> str:
    """Per search study, the configuration each rule selects and its test accuracy (%): DomainBed's training-domain
    validation (the held-out parts of the training domains, over the eval steps), the search's min(train, test)
    accuracy, and DomainBed's oracle (the test accuracy at the last step); empty without held-out data."""
    if "val_acc" not in frame or frame["val_acc"].isna().all() or curves is None or curves.empty:
        return ""
    frame = frame[frame["val_acc"].notna()]
    n = sum(1 for i in range(1, 10) if f"train{i}_out_acc" in curves)
    curves = curves[curves["trial_key"].isin(set(frame["trial_key"]))]
    records = curves[["trial_key", "step"]].merge(frame[["trial_key", "study"]], on="trial_key")
    for i in range(n):
        records[f"env{i}_in_acc"] = curves[f"train{i + 1}_acc"].values
        records[f"env{i}_out_acc"] = curves[f"train{i + 1}_out_acc"].values
    records[f"env{n}_in_acc"] = records[f"env{n}_out_acc"] = curves["test_acc"].values
    records = records.rename(columns={"study": "dataset", "trial_key": "hparams_seed"}).assign(
        method="-", trial_seed=0, test_envs=[(n,)] * len(records))
    chosen = {rule: selection.sweep_accs(records, rule).set_index("dataset") for rule in ("iid", "oracle")}
    rows = []
    for study, group in frame.groupby("study"):
        by_min = group.sort_values(["min_acc", "trial_key"], ascending=[False, True]).iloc[0]
        name = str(study).split("/search/", 1)[-1]
        iid, oracle = chosen["iid"].loc[study], chosen["oracle"].loc[study]
        rows.append([name, len(group), f"{100 * iid['test_acc']:.1f} (val {100 * iid['val_acc']:.1f}, step {int(iid['step'])})",
                     f"{100 * by_min['test_acc']:.1f}", f"{100 * oracle['test_acc']:.1f}"])
    note = ("Test accuracy (%) of the configuration each rule selects: training-domain validation (DomainBed's rule, "
            "pipelines/rex/selection.py: the best mean accuracy on the held-out parts of the training domains, over the "
            f"eval steps; setting holdout = {frame['holdout'].iloc[0]:g}), min(train, test) accuracy at the last step (the "
            "search's own criterion), and DomainBed's oracle (the test accuracy at the last step).\n\n")
    return note + reports.markdown_table(["study", "configurations", "training-domain validation", "min(train, test)",
                                          "oracle (test)"], rows)
