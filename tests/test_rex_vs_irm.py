"""rex-vs-irm: the grid of fixed-hyperparameter blocks, and a block search that resumes to its exact budget."""
import os
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import GENSWEEP, ROOT
from pipelines.rex import rex_vs_irm
from pipelines.engine.studies import next_block_size
from pipelines.engine.spec import GensweepError, resolve_settings
from pipelines.engine.store import ResultStore

BUDGET = 6
SETTINGS = ["variants=class", "ps=0.1", "methods=irm,vrex", "restarts=2", f"num_samples={BUDGET}", "block_size=2", "steps=401", "eval_every=200"]  # long enough that the SIGINT lands mid-search on an idle machine


def test_stages_and_validation():
    settings = resolve_settings(rex_vs_irm.PIPELINE, "paper", [])
    fixed, search = rex_vs_irm.stages(settings)
    assert (fixed.name, search.name) == ("fixed", "search")
    configs = fixed.plan.configs
    assert len(configs) == 3 * 6 * 4 * 3 and {c["hidden"] for c in configs} == {390}  # IRM's published hyperparameters
    # Each restart draws its own domains (label noise, colours) and its own initialisation.
    assert sorted({(c["seed"], c["data_seed"]) for c in configs}) == [(0, 0), (1, 1), (2, 2)]
    plan = search.plan
    assert len(plan.studies) == 72 and plan.budget == 340 and plan.study_name(plan.studies[0]) == "class/p=0.0/erm"
    assert plan.paired_by == ("variant", "shift_p") and {c["risk_reduction"] for c in configs} == {"sum"}
    only = resolve_settings(rex_vs_irm.PIPELINE, "smoke", ["stages=search"])
    assert [s.name for s in rex_vs_irm.stages(only)] == ["search"]
    assert {c["risk_reduction_setting"] for c in configs} == {"sum"}
    with pytest.raises(GensweepError, match="bad value for variants: 'shape'"):
        resolve_settings(rex_vs_irm.PIPELINE, "paper", ["variants=shape"])
    with pytest.raises(GensweepError, match="bad value for ps: 0.7"):
        resolve_settings(rex_vs_irm.PIPELINE, "paper", ["ps=0.1,0.7"])
    with pytest.raises(GensweepError, match="bad value for restarts: 0"):
        resolve_settings(rex_vs_irm.PIPELINE, "paper", ["restarts=0"])


def test_stage_one_restarts_draw_different_domains(digits):
    from tasks.cmnist import domains_for

    settings = resolve_settings(rex_vs_irm.PIPELINE, "smoke", ["stages=fixed", "variants=class", "ps=0.1", "methods=irm"])
    (fixed,) = rex_vs_irm.stages(settings)
    first, second = (domains_for(digits, {**c, "data": "digits"}) for c in fixed.plan.configs[:2])
    assert fixed.plan.configs[0]["data_seed"] != fixed.plan.configs[1]["data_seed"]
    assert not all(a.y.equal(b.y) and a.x.equal(b.x) for a, b in zip(first.train, second.train))  # label noise / colours redrawn


def test_blocks_shrink_at_the_end_of_the_search():
    assert next_block_size(8, left_in_study=340, left_in_all=1000, workers=2) == 8
    assert next_block_size(8, left_in_study=5, left_in_all=1000, workers=2) == 5  # a study's last block
    assert next_block_size(8, left_in_study=16, left_in_all=16, workers=2) == 4  # 16 / (2 * 2)
    assert next_block_size(8, left_in_study=3, left_in_all=3, workers=2) == 2  # not below a quarter of the block
    assert next_block_size(8, left_in_study=1, left_in_all=3, workers=2) == 1  # a study's last configuration
    assert next_block_size(8, left_in_study=40, left_in_all=40, workers=0) == 8


def _rows(results):
    return ResultStore.open(str(results)).read("trials", "rex-vs-irm")


@pytest.mark.e2e
def test_interrupted_block_search_resumes_to_exact_budget(tmp_path):
    results = tmp_path / "results"
    command = GENSWEEP + ["run", "rex-vs-irm", "--results", str(results), "--num-cpus", "2"]
    for item in SETTINGS:
        command += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while first.poll() is None and time.time() < deadline:
        trial_dir = results / "parquet" / "trials"
        if trial_dir.exists() and len(list(trial_dir.rglob("*.parquet"))) >= 4 + 2:  # stage 1 (4) + a search block
            break
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=120)
    interrupted = _rows(results)
    assert len(interrupted) < 4 + 2 * BUDGET, (tmp_path / "first.log").read_text()

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = _rows(results)
    assert rows["trial_key"].is_unique and len(rows) == 4 + 2 * BUDGET
    assert rows[rows["stage"] == "fixed"].groupby("method").size().to_dict() == {"irm": 2, "vrex": 2}
    search = rows[rows["stage"] == "search"]
    assert search.groupby("study").size().tolist() == [BUDGET, BUDGET]
    # Paired: both methods trained the same configurations (hyperparameters and seed) of every sample.
    hyper = ["hidden", "l2", "lr", "anneal_iters", "penalty_weight", "seed"]
    assert (search.groupby("sample")[hyper].nunique() == 1).all().all() and sorted(set(search["sample"])) == list(range(BUDGET))
    assert set(rows["risk_reduction"]) == {"sum"}
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}")
    for summary in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
        assert sum(t.state == TrialState.COMPLETE for t in trials) == BUDGET
        assert not any(t.state == TrialState.RUNNING for t in trials)
        assert summary.study_name.endswith(("class/p=0.1/irm", "class/p=0.1/vrex"))

    report = subprocess.run(GENSWEEP + ["report", "rex-vs-irm", "--results", str(results)], capture_output=True, text=True, timeout=300, env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    (folder,) = (results / "reports" / "rex-vs-irm").iterdir()
    assert {p.name for p in folder.iterdir()} == {"report.md", "figure_5_4.png", "above_chance.png"}
    text = (folder / "report.md").read_text()
    assert "| Class imbalance | 0.1 | IRM |" in text  # Figure 5.4's table
    assert f"| Class imbalance | 0.1 | IRM | {(search[search['method'] == 'irm']['test_acc'] > 0.5).sum()}/{BUDGET} |" in text  # the count
    assert "the configuration selected per study" in text


def test_retrain_stage_re_trains_each_studys_best_configuration_with_new_seeds():
    import json

    import pandas as pd

    assert "retrain" not in [s.name for s in rex_vs_irm.stages(resolve_settings(rex_vs_irm.PIPELINE, "smoke", []))]  # off by default
    settings = resolve_settings(rex_vs_irm.PIPELINE, "smoke", ["stages=search", "retrain_top=1", "retrain_seeds=2", "ps=0.1",
                                                               "variants=class", "methods=irm,vrex"])
    search, retrain = rex_vs_irm.stages(settings)
    assert retrain.name == "retrain" and retrain.followup
    rows = []
    for method, draws in (("irm", [(0.55, 64), (0.61, 128), (0.61, 256)]), ("vrex", [(0.70, 90), (0.40, 100), (0.20, 110)])):
        study = f"rex-vs-irm/s/search/class/p=0.1/{method}"
        for sample, (min_acc, hidden) in enumerate(draws):
            config = {**search.plan.studies[0], "method": method, "hidden": hidden, "lr": 1e-3, "l2": 1e-4, "anneal_iters": 100,
                      "penalty_weight": 1e3, "seed": sample, "sample": sample, "study": study, "stage": "search", "data": "d"}
            rows.append({**config, "trial_key": f"{method}{sample}", "min_acc": min_acc, "config_json": json.dumps(config)})
    configs = retrain.plan({"search": pd.DataFrame(rows[::-1])}).configs  # rows in any order: ties still go by trial key
    # irm: 0.61 twice, the tie goes to the smaller trial key (irm1, hidden 128); vrex: 0.70 (hidden 90)
    assert sorted((c["method"], c["hidden"], c["seed"], c["data_seed"], c["retrain_of"]) for c in configs) == [
        ("irm", 128, 0, 0, "irm1"), ("irm", 128, 1, 1, "irm1"), ("vrex", 90, 0, 0, "vrex0"), ("vrex", 90, 1, 1, "vrex0")]
    assert not {"study", "sample", "stage", "data"} & set().union(*configs)  # the runner adds stage and data again
    assert {c["retrain_source_min_acc"] for c in configs} == {0.61, 0.70}


def test_report_sets_each_re_trained_mean_beside_the_value_it_was_selected_on(tmp_path):
    import pandas as pd

    search = pd.DataFrame([dict(trial_key="irm1", stage="search", study="rex-vs-irm/s/search/class/p=0.1/irm", variant="class",
                                shift_p=0.1, method="irm", test_acc=0.52, train_acc=0.7, min_acc=0.61, risk_reduction="sum")])
    retrain = pd.DataFrame([dict(trial_key=f"r{s}", stage="retrain", retrain_of="irm1", retrain_rank=0, retrain_source_min_acc=0.61,
                                 variant="class", shift_p=0.1, method="irm", hidden=128, lr=1e-3, penalty_weight=1e3,
                                 train_acc=train, test_acc=test, risk_reduction="sum")
                            for s, (train, test) in enumerate([(0.70, 0.50), (0.80, 0.60)])])
    text = rex_vs_irm.report(pd.concat([search, retrain], ignore_index=True), pd.DataFrame(), str(tmp_path))
    assert "| class/p=0.1/irm | 0 | h=128 lr=0.001 pw=1e+03 | 61.0 | 75.0 ± 5.0 | 55.0 ± 5.0 | 2 |" in text


# --- the cpu preset (issue 32): sizes, paired searches, and the report's counts ----------------------------------


def test_cpu_preset_covers_both_claims_at_its_sizes():
    settings = resolve_settings(rex_vs_irm.PIPELINE, "cpu", [])
    fixed, search = rex_vs_irm.stages(settings)
    configs = fixed.plan.configs
    # Figure 5.4: every variant and method, at least three p including the thesis's small ones, at least 5 restarts
    assert {(c["variant"], c["method"]) for c in configs} == {(v, m) for v in ("class", "digit", "color") for m in ("erm", "irm", "vrex", "mmrex")}
    assert {0.1, 0.2} <= {c["shift_p"] for c in configs} and len({c["shift_p"] for c in configs}) >= 3
    assert min(configs.count(c) for c in configs) == 1 and len({c["seed"] for c in configs}) >= 5
    assert {c["hidden"] for c in configs} == {390} and {c["steps"] for c in configs} == {501}
    # the searches: only at each variant's small p (the thesis's), every method, at least 40 configurations each
    plan = search.plan
    assert sorted((s["variant"], s["shift_p"], s["method"]) for s in plan.studies) == sorted(
        (v, p, m) for v, p in (("class", 0.1), ("digit", 0.1), ("color", 0.2)) for m in ("erm", "irm", "vrex", "mmrex"))
    assert plan.budget >= 40 and plan.sampler == "random"
    # the setting is opt-in: the other presets search at every p of ps, as before
    assert len(rex_vs_irm.stages(resolve_settings(rex_vs_irm.PIPELINE, "paper", []))[1].plan.studies) == 72


def test_cpu_preset_searches_are_paired():
    """Every method of a (variant, p) is handed the same configurations: per sample index the same hyperparameters and seed."""
    import optuna

    from pipelines.engine.searchers import StudySearcher
    from tasks.report import configurations

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = resolve_settings(rex_vs_irm.PIPELINE, "cpu", ["stages=search"])
    (search,) = rex_vs_irm.stages(settings)
    plan = search.plan
    names = [f"rex-vs-irm/cpu/search/{plan.study_name(s)}" for s in plan.studies]
    searcher = StudySearcher(plan, optuna.storages.InMemoryStorage(), names, {"stage": "search"}, search.metric, search.mode, {}, 2, 2)
    handed = []
    while any(entry.todo for entry in searcher.entries):  # every block of every study, as the workers would take them
        handed += configurations(searcher.suggest(f"t{len(handed)}"))
    hyper = ("hidden", "l2", "lr", "anneal_iters", "penalty_weight", "seed")
    draws: dict = {}
    for c in handed:
        draws.setdefault((c["variant"], c["shift_p"], c["sample"]), {})[c["method"]] = tuple(c[k] for k in hyper)
    assert len(handed) == len(plan.studies) * plan.budget
    assert len(draws) == 3 * plan.budget
    for (variant, p, sample), by_method in draws.items():
        assert set(by_method) == {"erm", "irm", "vrex", "mmrex"}
        assert len(set(by_method.values())) == 1, (variant, p, sample, by_method)  # the same draw for every method
        assert next(iter(by_method.values()))[-1] == sample  # model seed = sample index
    assert len({v for (variant, _, _), m in draws.items() for v in m.values()}) > plan.budget  # the variants draw their own


LN2 = 0.6931471805599453


def _search_row(method, sample, test, train=0.8, collapsed=False, **extra):
    nll = LN2 + 0.004 if collapsed else 0.5
    return dict(stage="search", variant="class", shift_p=0.1, method=method, sample=sample, trial_key=f"{method}{sample}",
                test_acc=test, train_acc=train, min_acc=min(test, train), hidden=64 + sample, l2=1e-4, lr=1e-3,
                anneal_iters=100, penalty_weight=1e3, train1_nll=nll, train2_nll=nll, test_nll=LN2 - 0.003 if collapsed else 0.9,
                risk_reduction="sum", **extra)


def test_report_shares_equal_the_rows_counts(tmp_path):
    import pandas as pd

    rows = [_search_row("irm", i, t, collapsed=c) for i, (t, c) in enumerate(
        [(0.50, True), (0.505, True), (0.47, True), (0.46, False), (0.30, False), (0.12, False)])]
    rows += [_search_row("vrex", i, t, collapsed=c) for i, (t, c) in enumerate(
        [(0.50, False), (0.52, False), (0.61, False), (0.48, False), (0.39, False), (0.501, True)])]
    rows.append(dict(_search_row("vrex", 6, 0.55, train=0.9), train2_nll=LN2))  # one domain at ln 2: not collapsed
    rows.append(_search_row("vrex", 7, 0.83, train=0.38))  # against colour: below chance on its training domains
    rows.append(_search_row("vrex", 8, 0.40, train=0.50))  # at 40% and 50% exactly: neither follows nor against colour
    frame = pd.DataFrame(rows)
    outcomes = {o["method"]: o for o in rex_vs_irm.search_outcomes(frame)}
    keys = ("n", "above", "collapsed", "against", "follows", "above_live")
    # irm: above 50% only 0.505 (0.50 is not above; 0.47 and 0.46 are below); collapsed 3; follows colour (< 40%): 0.30, 0.12
    assert {k: outcomes["irm"][k] for k in keys} == dict(n=6, above=1, collapsed=3, against=0, follows=2, above_live=0)
    # vrex: above 0.52, 0.61, 0.501 (collapsed), 0.55, 0.83 (against colour); follows colour: 0.39
    assert {k: outcomes["vrex"][k] for k in keys} == dict(n=9, above=5, collapsed=1, against=1, follows=1, above_live=3)
    text = rex_vs_irm.report(frame, pd.DataFrame(), str(tmp_path))
    low, high = rex_vs_irm.wilson(1, 6)
    assert f"| Class imbalance | 0.1 | IRM | 1/6 | 16.7% [{100 * low:.1f}, {100 * high:.1f}] | 0% (\"never\") | 3/6 | 0/6 | 2/6 | 0/6 |" in text
    low, high = rex_vs_irm.wilson(5, 9)
    assert f"| Class imbalance | 0.1 | V-REx | 5/9 | 55.6% [{100 * low:.1f}, {100 * high:.1f}] | 4.4% (REx) | 1/9 | 1/9 | 1/9 | 3/9 |" in text
    # the selected configuration: the highest min(train, test) accuracy (vrex sample 2: min 0.61), not the highest test accuracy
    frame.loc[frame["trial_key"] == "vrex7", "test_acc"] = 0.95  # the highest test accuracy, but min(train, test) 0.38
    text = rex_vs_irm.report(frame, pd.DataFrame(), str(tmp_path))
    assert "| Class imbalance | 0.1 | V-REx | 2 | 66 | 0.0001 | 0.001 | 100 | 1e+03 | 61.0 | 80.0 | 61.0 |" in text
    assert {p.name for p in tmp_path.iterdir()} == {"above_chance.png"}


@pytest.mark.parametrize("k, n", [(0, 5), (1, 6), (4, 7), (15, 340), (81, 340), (40, 40), (7, 40)])
def test_wilson_interval_is_scipys(k, n):
    from scipy.stats import binomtest

    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert rex_vs_irm.wilson(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_interval_by_hand():
    # k = 0, n = 5: centre = (z^2 / 10) / (1 + z^2 / 5) and half = z * sqrt(z^2 / 100) / (1 + z^2 / 5), the same
    z2 = 1.959963984540054 ** 2
    assert rex_vs_irm.wilson(0, 5) == pytest.approx((0.0, 2 * (z2 / 10) / (1 + z2 / 5)), abs=1e-12)
    assert rex_vs_irm.wilson(0, 5)[1] == pytest.approx(0.4345, abs=1e-4)
    # the ends exactly: the share 0 (or 1) is inside its interval, not a rounding error outside it
    assert all(rex_vs_irm.wilson(0, n)[0] == 0.0 and rex_vs_irm.wilson(n, n)[1] == 1.0 for n in range(1, 400))


def test_report_draws_shares_of_none_and_all(tmp_path):
    """A study with no configuration above chance and one with every configuration above (0/6 and 10/10: their
    floating-point Wilson ends fell a hair inside 0 and 1, and the figure's error bars came out negative)."""
    import pandas as pd

    rows = [_search_row("irm", i, 0.3) for i in range(6)] + [_search_row("vrex", i, 0.7) for i in range(10)]
    text = rex_vs_irm.report(pd.DataFrame(rows), pd.DataFrame(), str(tmp_path))
    assert "| IRM | 0/6 | 0.0% [0.0, 39.0] |" in text and "| V-REx | 10/10 | 100.0% [72.2, 100.0] |" in text
    assert (tmp_path / "above_chance.png").exists()


def test_figure_5_4_pairs_restarts_and_says_the_thesis_gives_no_numbers(tmp_path):
    import pandas as pd

    rows = [dict(stage="fixed", variant="digit", shift_p=0.1, method=m, seed=s, test_acc=acc, risk_reduction="sum")
            for m, accs in (("irm", (0.20, 0.30, 0.25)), ("vrex", (0.60, 0.50, 0.20))) for s, acc in enumerate(accs)]
    text = rex_vs_irm.report(pd.DataFrame(rows), pd.DataFrame(), str(tmp_path))
    assert "| Digit (shape) imbalance | 0.1 | IRM | 25.0 ± 2.9 | 3 |" in text
    # V-REx - IRM per restart: 40, 20, -5 -> mean 18.3, s.e. std(40, 20, -5) / sqrt(3) = 13.0; ahead in 2 of 3
    assert "| Digit (shape) imbalance | 0.1 | 18.3 ± 13.0 | 2/3 |" in text
    assert "as a plot only" in text and "figure_5_4.png" in {p.name for p in tmp_path.iterdir()}
