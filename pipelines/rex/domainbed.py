"""DomainBed's MNIST sweep (thesis §5.4, "Domain generalization in the DomainBed suite") and its three selection rules.

Varies, as DomainBed's ``scripts/sweep.py``: dataset (ColoredMNIST,
RotatedMNIST), algorithm (ERM, IRM, GroupDRO, VREx with DomainBed's formulas;
MM-REx ours), the test environments (each single one and, for
leave-one-domain-out, each pair: ``loo_datasets``), the trial seed
(``n_trials``) and the hyperparameter draw (``n_hparams``: hparams_seed 0 is
the defaults, the others DomainBed's random draws, equal to theirs: see
core.domainbed.hparams). Fixed: the ConvNet, Adam, ``steps``,
``checkpoint_freq``, the in/out holdout fraction. Each run's seed is
DomainBed's seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed).

One stage per dataset; in it one Optuna study per (algorithm, trial seed),
whose trials are that trial's runs: every draw for every test-environment
set, in that order, recorded with DomainBed's hyperparameter values as
parameters (``Search.draws``; DomainBed's own sampler, not Optuna's). A draw
gives the same learning rate and batch size to every test-environment set of
a trial, so consecutive runs share a Tune trial and are trained as one
stacked block (``block_size``, default one draw's runs). Resuming a sweep
finds the runs it finished in the Parquet rows. The studies' values are each
run's own training-domain validation accuracy (``val_acc``); the model
selection itself is the report's (:mod:`pipelines.rex.selection`), on every
checkpoint's in- and out-split accuracies in the curves.

Presets: ``smoke`` (embedded digits), ``mnist`` (the 10,000-image MNIST
test split on 2 CPU cores: ColoredMNIST only, a quarter-width ConvNet,
fewer steps, draws and trials, the anneal steps scaled to the shorter
training) and ``paper`` (DomainBed's full sweep: 20 draws x 3 trials x every
test-environment set, 5,001 steps).
"""
from __future__ import annotations

from core import methods
from core.data import load_digits_source, load_idx_merged
from core.domainbed import hparams as dbh
from core.domainbed.data import DATASETS, ENVIRONMENTS
from pipelines.engine.spec import GensweepError, Pipeline, Search, Setting, Stage
from pipelines.rex import selection
from tasks.domainbed import domainbed_trainable

METHODS = tuple(methods.DOMAINBED_METHODS)  # erm, irm, groupdro, vrex, mmrex (DomainBed's order, ours last)
NAMES = {m: methods.domainbed(m).display for m in METHODS}
NO_PAIRS = "none"  # loo_datasets=none: every dataset with its single test environments only

SETTINGS = {
    "datasets": Setting(list(DATASETS), "DomainBed datasets", choices=DATASETS),
    "algorithms": Setting(["erm", "irm", "vrex"], "algorithms (core.methods DomainBed entries; mmrex is ours)", choices=METHODS),
    "n_hparams": Setting(2, "hyperparameter draws per (algorithm, trial): hparams_seed 0 (the defaults) .. n-1", ge=1),
    "n_trials": Setting(1, "trial seeds (the in/out splits and the draws)", ge=1),
    "loo_datasets": Setting(["ColoredMNIST"], "datasets (among datasets) whose sweep adds every pair of test environments "
                            "(needed by leave-one-domain-out; DomainBed's default for all); none: no pairs",
                            choices=(*DATASETS, NO_PAIRS)),
    "steps": Setting(101, f"training steps per run (DomainBed: {dbh.STEPS})", ge=1),
    "checkpoint_freq": Setting(50, f"steps between checkpoints (every split evaluated; DomainBed: {dbh.CHECKPOINT_FREQ})", ge=1),
    "holdout_fraction": Setting(dbh.HOLDOUT_FRACTION, "share of each environment held out as its out-split", gt=0, le=0.9),
    "width": Setting(0.125, "channel multiplier of the ConvNet (1: DomainBed's 64/128/128/128)", gt=0, le=4),
    "anneal_scale": Setting(0.02, "anneal step used = int(drawn x anneal_scale) (1: DomainBed's; shorter trainings "
                            "scale it by steps / 5001)", gt=0, le=1),
    "max_batch_size": Setting(0, "cap on the drawn batch sizes (0: DomainBed's draws as they are; smoke: 32)", ge=0),
    "block_size": Setting(0, "runs trained together in one Tune trial (0: one draw's runs, every test-environment set)", ge=0),
    "block_memory_gb": Setting(0.0, "training memory (GiB) one stacked group may use (0: a share of the device)", ge=0.0),
}
PRESETS = {
    "smoke": dict(steps=201, anneal_scale=0.04, max_batch_size=32),
    "mnist": dict(datasets=["ColoredMNIST"], algorithms=["erm", "irm", "vrex"], n_hparams=3, n_trials=2,
                  loo_datasets=["ColoredMNIST"], steps=501, checkpoint_freq=100, width=0.25, anneal_scale=0.1,
                  max_batch_size=0),
    "paper": dict(datasets=list(DATASETS), algorithms=list(METHODS), n_hparams=dbh.N_HPARAMS, n_trials=dbh.N_TRIALS,
                  loo_datasets=list(DATASETS), steps=dbh.STEPS, checkpoint_freq=dbh.CHECKPOINT_FREQ, width=1.0, anneal_scale=1.0,
                  max_batch_size=0),
}

PRESET_HELP = {
    "smoke": "embedded digits (1,797): both datasets, ERM / IRM / VREx, 2 draws x 1 trial, 201 steps (anneal steps "
             "x 0.04), ConvNet width 1/8, batch sizes capped at 32: plumbing only",
    "mnist": "ColoredMNIST on the 10,000-image MNIST test split: 3 draws x 2 trials, 501 steps, ConvNet width 1/4, "
             "anneal steps x 0.1 (DomainBed: 70,000 images, 20 draws x 3 trials, 5,001 steps, full width)",
    "paper": "DomainBed's sweep: both datasets, 5 algorithms, 20 draws x 3 trials x every test-environment set, 5,001 steps (needs --data-dir)",
}


def load_data(settings: dict, data_dir: str | None):
    """The source: every split of the MNIST-format directory merged (DomainBed's 70,000), or the embedded digits."""
    return load_digits_source() if data_dir is None else load_idx_merged(data_dir)


def envs_text(test_envs) -> str:
    return ",".join(str(t) for t in test_envs)


def test_env_sets(dataset: str, settings: dict) -> list[tuple[int, ...]]:
    """The dataset's test-environment sets: every single one, with every pair when it is in ``loo_datasets``."""
    return dbh.test_env_combinations(len(ENVIRONMENTS[dataset]), pairs=dataset in settings["loo_datasets"])


def _distributions(algorithm: str, combos: list[str]) -> dict:
    """Optuna distributions of the recorded parameters: the registry's ranges (core.domainbed.hparams.search_space, the
    table its draws use; they hold the defaults too) and the test-environment sets."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {name: (IntDistribution if space.integer else FloatDistribution)(*space.bounds, log=True)
           for name, space in dbh.search_space(algorithm).items()}
    return {**out, "test_envs": CategoricalDistribution(combos)}


def draws(fixed: dict, settings: dict) -> list[dict]:
    """A study's runs, in order: for each hparams_seed, its DomainBed hyperparameters with every test-environment set."""
    dataset, method, trial = fixed["dataset"], fixed["method"], int(fixed["trial_seed"])
    algorithm = dbh.ALGORITHMS[method]
    combos = test_env_sets(dataset, settings)
    distributions = _distributions(algorithm, [envs_text(c) for c in combos])
    out = []
    for hparams_seed in range(settings["n_hparams"]):
        hp = dbh.hparams_for(algorithm, hparams_seed, trial)
        for combo in combos:
            params = {k: hp[k] for k in distributions if k != "test_envs"}
            params["test_envs"] = envs_text(combo)
            if settings["max_batch_size"]:
                params["batch_size"] = min(params["batch_size"], settings["max_batch_size"])
            derived = {"hparams_seed": hparams_seed, "seed": dbh.run_seed(dataset, algorithm, list(combo), hparams_seed, trial),
                       "weight_decay": hp["weight_decay"]}
            out.append({"params": params, "distributions": distributions, "derived": derived})
    return out


def _label(c: dict) -> str:
    return f"{c['method']} {c['dataset']} test_envs={c['test_envs']} h={c['hparams_seed']} t={c['trial_seed']}"


def stages(settings: dict) -> list[Stage]:
    """One stage per dataset: one study per (algorithm, trial seed) of n_hparams x test-environment sets runs."""
    out = []
    for dataset in settings["datasets"]:
        combos = test_env_sets(dataset, settings)
        memory = float(settings["block_memory_gb"])
        studies = [
            dict(dataset=dataset, method=method, trial_seed=trial, steps=settings["steps"], checkpoint_freq=settings["checkpoint_freq"],
                 holdout_fraction=settings["holdout_fraction"], width=settings["width"], anneal_scale=settings["anneal_scale"],
                 **({"block_memory_gb": memory} if memory > 0 else {}))
            for method in settings["algorithms"] for trial in range(settings["n_trials"])
        ]
        search = Search(
            studies=studies, space=None, budget=settings["n_hparams"] * len(combos),
            study_name=lambda s: f"{s['method']}/trial={s['trial_seed']}",
            block_size=settings["block_size"] or len(combos), draws=lambda fixed: draws(fixed, settings),
        )
        out.append(Stage(dataset, domainbed_trainable, search, metric="val_acc", mode="max", label=_label))
    return out


def check(settings: dict) -> None:
    """Refuse settings that would be ignored: checkpoints past the last step, ``loo_datasets`` outside ``datasets``."""
    if settings["checkpoint_freq"] > settings["steps"]:
        raise GensweepError(f"checkpoint_freq {settings['checkpoint_freq']} is more than steps {settings['steps']}")
    loo, swept = settings["loo_datasets"], settings["datasets"]
    if NO_PAIRS in loo and len(loo) > 1:
        raise GensweepError(f"bad value for loo_datasets: {NO_PAIRS} with {', '.join(d for d in loo if d != NO_PAIRS)} "
                            f"(give {NO_PAIRS} alone)")
    outside = [d for d in loo if d != NO_PAIRS and d not in swept]
    if outside:
        raise GensweepError(f"loo_datasets names {', '.join(outside)}, not in datasets ({', '.join(swept)}): it would be "
                            f"ignored; give loo_datasets a subset of datasets, or loo_datasets={NO_PAIRS} for no pairs")


def report(trials, curves, out_dir: str) -> str:
    """DomainBed's three tables (one per selection rule, ours beside the published rows) and the selection figure."""
    frame = selection.records(trials, curves)
    envs = {d: ENVIRONMENTS[d] for d in DATASETS}
    text, sweeps = selection.rule_tables(frame, envs, list(METHODS), NAMES, dbh.PUBLISHED)
    selection.selection_figure(sweeps, envs, list(METHODS), NAMES, f"{out_dir}/selection.png", dbh.PUBLISHED,
                               extra_envs={"ColoredMNIST": 2})
    runs = trials.groupby(["dataset", "method"]).size()
    counts = ", ".join(f"{d} {NAMES.get(m, m)}: {n}" for (d, m), n in runs.items())
    widths = sorted(set(trials["width"])) if "width" in trials else []
    note = (f"{len(trials)} runs ({counts}); ConvNet width {', '.join(f'{w:g}' for w in widths)} "
            f"(1 = DomainBed's), {int(trials['steps'].max())} steps, checkpoints every {int(trials['checkpoint_freq'].max())}.\n\n")
    return note + text + "\n![test-domain accuracy per selection rule](selection.png)\n"


PIPELINE = Pipeline(
    name="domainbed",
    description="DomainBed's Colored and Rotated MNIST sweep with its three model-selection rules (thesis §5.4)",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=load_data,
    stages=stages,
    report=report,
    check=check,
    preset_help=PRESET_HELP,
    needs_data_dir=("mnist", "paper"),  # MNIST-based studies: on the embedded digits they would be different ones
)
