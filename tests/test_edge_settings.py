"""Settings that would do nothing or the wrong thing are refused in one line, before anything is declared or run."""
from __future__ import annotations

import pytest

from pipelines import cli, registry
from pipelines.engine.spec import GensweepError, Setting, resolve_settings


def test_an_item_listed_twice_is_refused_for_every_list_setting():
    """``datasets=ColoredMNIST,ColoredMNIST`` trained every configuration twice and the three stores disagreed."""
    checked = 0
    for pipeline in registry.pipelines().values():
        for key, setting in pipeline.all_settings().items():
            if not setting.is_list or setting.repeats:
                continue
            item = setting.default[0] if setting.default else setting.choices[0]
            with pytest.raises(GensweepError, match=f"bad value for {key}: .* listed twice"):
                setting.parse(key, f"{item},{item}")
            checked += 1
    assert checked >= 20


def test_duplicates_are_refused_before_ray_with_one_line(capsys, tmp_path, monkeypatch):
    import pipelines.engine.runner as runner

    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    assert cli.main(["run", "domainbed", "--results", str(tmp_path), "--set", "datasets=ColoredMNIST,ColoredMNIST"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gensweep: error: bad value for datasets: 'ColoredMNIST' is listed twice (give each once)"]
    with pytest.raises(GensweepError, match="0.2 is listed twice"):  # equal after parsing counts as twice
        resolve_settings(registry.get("memorization-csr"), "smoke", ["fractions=0.2,0.20"])


def test_every_preset_lists_each_item_once_and_a_sequence_may_repeat():
    for pipeline in registry.pipelines().values():
        for preset in pipeline.presets:
            resolve_settings(pipeline, preset, [])  # the presets themselves pass the check
    assert Setting([64, 64], "layer widths", repeats=True).parse("widths", "32,32") == [32, 32]


@pytest.mark.parametrize("argv, words", [
    (["run", "toy-sem", "--results", ""], "bad --results ''"),
    (["report", "toy-sem", "--results", " "], "bad --results ''"),
    (["run", "toy-sem", "--data-dir", "{tmp}"], "toy-sem generates its own data"),
    (["run", "toy-sem", "--set", "lr=inf"], "bad value for lr: inf (must be a finite number)"),
    (["run", "domainbed", "--set", "datasets=ColoredMNIST", "--set", "loo_datasets=RotatedMNIST"],
     "loo_datasets names RotatedMNIST, not in datasets (ColoredMNIST): it would be ignored"),
    (["run", "domainbed", "--set", "datasets=RotatedMNIST"],  # the default loo_datasets (ColoredMNIST) is not swept
     "loo_datasets names ColoredMNIST, not in datasets (RotatedMNIST): it would be ignored; give loo_datasets a subset of "
     "datasets, or loo_datasets=none for no pairs"),
    (["run", "domainbed", "--set", "loo_datasets=none,ColoredMNIST"], "bad value for loo_datasets: none with ColoredMNIST (give none alone)"),
    (["run", "rex-vs-irm", "--set", "stages=fixed", "--set", "retrain_top=2"],
     "retrain_top 2 re-trains the search stage's best configurations, but stages (fixed) has no search"),
    (["run", "rl-spurious", "--set", "train_factors=1,1"], "bad value for train_factors: 1.0 is listed twice"),
    (["run", "rl-spurious", "--set", "train_factors=1,1.0"], "bad value for train_factors: 1.0 is listed twice"),
    (["run", "rl-spurious", "--set", "test_factor=inf"], "bad value for test_factor: inf (must be a finite number)"),
    (["run", "rl-spurious", "--set", "test_factor=-inf"], "bad value for test_factor: -inf (must be a finite number)"),
])
def test_settings_that_do_nothing_or_the_wrong_thing_are_refused(argv, words, tmp_path, monkeypatch, capsys):
    import pipelines.engine.runner as runner

    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    monkeypatch.chdir(tmp_path)  # an empty --results would have written here
    argv = [part.format(tmp=tmp_path) for part in argv]
    if "--results" not in argv:
        argv += ["--results", str(tmp_path / "results")]
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert words in line, line
    assert not (tmp_path / "parquet").exists() and not (tmp_path / "mlflow.db").exists()


def test_settings_next_to_the_refused_ones_are_accepted():
    """The refusals are exact: pairs for a swept dataset, none for no pairs, retrain_top with its search stage."""
    domainbed = registry.get("domainbed")
    alone = resolve_settings(domainbed, "smoke", ["datasets=RotatedMNIST", "loo_datasets=none"])
    (stage,) = domainbed.stages(alone)
    assert stage.plan.budget == alone["n_hparams"] * 6  # RotatedMNIST's 6 single test environments, no pairs
    both = resolve_settings(domainbed, "smoke", ["loo_datasets=RotatedMNIST,ColoredMNIST"])
    assert [s.plan.budget for s in domainbed.stages(both)] == [both["n_hparams"] * 6, both["n_hparams"] * 21]
    rex = registry.get("rex-vs-irm")
    settings = resolve_settings(rex, "smoke", ["stages=search", "retrain_top=1"])
    assert [s.name for s in rex.stages(settings)] == ["search", "retrain"]
    resolve_settings(rex, "smoke", ["stages=fixed", "retrain_top=0"])
    assert resolve_settings(registry.get("rl-spurious"), "paper", [])["train_factors"] == [1.0, 2.0]  # two distinct domains
