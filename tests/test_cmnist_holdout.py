"""The opt-in training-domain validation of the Colored MNIST searches (setting holdout): held-out parts of the training
domains, DomainBed's rule beside min(train, test), and nothing changed for sweeps without it."""
from __future__ import annotations

import pandas as pd

from core.cmnist.domains import Domain, Domains, build_cmnist, hold_out
from core.cmnist.train import config_from_dict, train_block
from pipelines import registry
from pipelines.engine.spec import resolve_settings, sweep_id
from pipelines.rex import cmnist_search, rex_vs_irm
from pipelines.rex.common import validation_table


def test_hold_out_splits_each_training_domain(digits):
    domains = build_cmnist(digits, seed=0)
    held = hold_out(domains, 0.2, seed=0)
    for whole, part, out in zip(domains.train, held.train, held.val):
        assert out.name == f"{whole.name}_out" and len(out.y) == int(len(whole.y) * 0.2)
        assert len(part.y) + len(out.y) == len(whole.y)
        rows = lambda d: {tuple(r) for r in d.x.flatten(1).tolist()}
        assert rows(part) | rows(out) == rows(whole) and not rows(part) & rows(out)
    assert held.test is domains.test


def test_held_out_parts_are_evaluated_not_trained_on(digits):
    domains = build_cmnist(digits, seed=0)
    config = config_from_dict(dict(hidden=32, lr=1e-3, l2=1e-3, anneal_iters=5, penalty_weight=10.0, seed=0))
    plain = train_block(domains, "irm", [config], steps=3, eval_every=2)[0]
    held = train_block(hold_out(domains, 0.25, 0), "irm", [config], steps=3, eval_every=2)[0]
    assert "val_acc" not in plain and "train1_out_acc" not in plain
    assert held["val_acc"] == (held["train1_out_acc"] + held["train2_out_acc"]) / 2
    assert held["min_acc"] == min(held["train1_acc"], held["train2_acc"], held["test_acc"])  # not the held-out parts
    assert held["train1_nll"] != plain["train1_nll"]  # trained on the smaller training parts
    # one example held out twice, once with each label: one of the two is misclassified (accuracy 0), yet
    # training and every other metric are those of the same domains without them
    x, y, c = domains.test[0].x[:1], domains.test[0].y[:1], domains.test[0].color[:1]
    val = [Domain("a_out", x, y, c), Domain("b_out", x, 1 - y, c)]
    with_val = train_block(Domains(domains.train, domains.test, val), "irm", [config], steps=3, eval_every=2)[0]
    assert min(with_val["a_out_acc"], with_val["b_out_acc"]) == 0.0 and with_val["val_acc"] == 0.5
    assert {k: v for k, v in with_val.items() if not k.startswith(("a_out", "b_out", "val"))} == plain


def test_searches_without_holdout_keep_their_configs_and_sweep_ids():
    for module in (cmnist_search, rex_vs_irm):
        pipeline = registry.get(module.PIPELINE.name)
        settings = resolve_settings(pipeline, "smoke", [])
        # what the sweep id was computed from before the opt-in settings holdout and search_at existed
        before = {k: v for k, v in settings.items() if k not in ("holdout", "search_at")}
        assert sweep_id(pipeline.name, "smoke", settings, "d", pipeline.all_settings()) == sweep_id(pipeline.name, "smoke", before, "d")
        search = next(s for s in module.stages(settings) if s.name == "search").plan
        assert all("holdout" not in fixed for fixed in search.studies)
        opted = resolve_settings(pipeline, "smoke", ["holdout=0.2"])
        assert sweep_id(pipeline.name, "smoke", opted, "d", pipeline.all_settings()) != sweep_id(pipeline.name, "smoke", before, "d")
        assert all(fixed["holdout"] == 0.2 for fixed in next(s for s in module.stages(opted) if s.name == "search").plan.studies)


def test_validation_table_puts_the_rules_side_by_side():
    # a: best held-out accuracy at step 10 (val .80, test there .30); b: best min(train, test) and final test accuracy
    trials = pd.DataFrame({"trial_key": ["a", "b"], "study": "s/search/irm", "val_acc": [0.7, 0.6], "min_acc": [0.2, 0.4],
                           "test_acc": [0.2, 0.4], "holdout": 0.2})
    curves = pd.DataFrame({"trial_key": ["a", "a", "b", "b"], "step": [0, 10, 0, 10],
                           "train1_acc": 0.9, "train2_acc": 0.9, "train1_out_acc": [0.5, 0.9, 0.6, 0.6],
                           "train2_out_acc": [0.5, 0.7, 0.6, 0.6], "test_acc": [0.1, 0.3, 0.2, 0.4]})
    text = validation_table(trials, curves)
    assert "| irm | 2 | 30.0 (val 80.0, step 10) | 40.0 | 40.0 |" in text
    assert validation_table(trials.drop(columns="val_acc"), curves) == ""
