"""The naf pipelines end to end through the real runner (Ray, MLflow, Parquet) at tiny sizes, then their reports."""
from __future__ import annotations

import pytest

from pipelines.engine.spec import resolve_settings
from pipelines.naf import sinewave, tabular, toy, vae

TINY = {
    toy: (["targets=U4,mog4", "energy_steps=60", "density_steps=60", "eval_samples=2000", "eval_every=30"], 8),
    sinewave: (["steps=100", "eval_every=50"], 4),
    tabular: (["max_epochs=2", "mixture6_train=500", "hidden=16"], 6),  # maf, dsf (2-seed blocks), zuko-maf (one per trial)
    vae: (["epochs=1", "hidden=32", "iw_samples=5", "posteriors=gaussian,dsf"], 2),
}


@pytest.mark.e2e
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.PIPELINE.name)
def test_tiny_sweep_and_report(module, ray_session, tmp_path):
    from pipelines.engine.runner import Sweep, run_sweep
    from pipelines.engine.store import ResultStore

    overrides, total = TINY[module]
    settings = resolve_settings(module.PIPELINE, "smoke", overrides)
    summary = run_sweep(Sweep(module.PIPELINE, "smoke", settings, str(tmp_path), quiet=True, num_cpus=2))
    assert summary.complete and summary.failed == 0 and summary.total == total
    store = ResultStore.open(str(tmp_path))
    trials = store.read("trials", module.PIPELINE.name)
    curves = store.read("curves", module.PIPELINE.name)
    assert len(trials) == total and trials["trial_key"].is_unique
    for key in ("transformer", "flows", "seed"):
        assert trials[key].notna().all()
    metric = {toy: "kl_nats", sinewave: "mode_mass_0.6", tabular: "test_ll_nats", vae: "iw_bound"}[module]
    assert metric in trials
    assert ("target" in trials) if module is toy else True
    assert ("dataset" in trials) if module is tabular else True
    out = tmp_path / "report"
    out.mkdir()
    text = module.PIPELINE.report(trials, curves, str(out))
    assert "|" in text
