"""DomainBed's three selection rules and its tables (pipelines/rex/selection.py) on hand-made records.

The records follow DomainBed's results.jsonl: one per (run, checkpoint), runs
for every single test environment and every pair (leave-one-domain-out), two
hyperparameter draws, two trial seeds, checkpoints 0, 100, 200. The expected
numbers are worked out by hand from domainbed/model_selection.py and
scripts/collect_results.py (comments below).
"""
from __future__ import annotations

import itertools

import pandas as pd
import pytest

from pipelines.rex import selection

STEPS = (0, 100, 200)
COMBOS = [(0,), (0, 1), (0, 2), (1,), (1, 2), (2,)]

# Group "test env 0", trial 0, hand-set values (anything not listed is 0.5):
#   h0 single (0,): env1_out .60 .80 .70, env2_out .60 .70 .90 -> means .60 .75 .80: best step 200 (val .80);
#                   env0_in .20 .30 .40; env0_out at the last step .35
#   h1 single (0,): env1_out .70 .90 .60, env2_out .70 .80 .50 -> means .70 .85 .55: best step 100 (val .85);
#                   env0_in .50 .60 .10; env0_out at the last step .15
#   training-domain validation: h1 (.85 > .80) -> env0_in of h1 at step 100 = .60
#   oracle (last checkpoint, env0_out): h0 (.35 > .15) -> env0_in of h0 at step 200 = .40
#   leave-one-domain-out: h0 pairs: env1_in of (0,1) .50 .55 .60, env2_in of (0,2) .40 .45 .70 -> means .45 .50 .65: step 200
#                         h1 pairs: .90 .50 .50 and .80 .50 .50 -> means .85 .50 .50: step 0 (val .85)
#                         -> h1 (.85 > .65): env0_in of h1's single run at step 0 = .50
#                         (on the pairs' out-splits h0 would win: .90 at step 0 -> .20)
HAND = {
    (0, (0,)): {"env1_out_acc": (.60, .80, .70), "env2_out_acc": (.60, .70, .90), "env0_in_acc": (.20, .30, .40), "env0_out_acc": (.5, .5, .35)},
    (1, (0,)): {"env1_out_acc": (.70, .90, .60), "env2_out_acc": (.70, .80, .50), "env0_in_acc": (.50, .60, .10), "env0_out_acc": (.5, .5, .15)},
    (0, (0, 1)): {"env1_in_acc": (.50, .55, .60), "env1_out_acc": (.9, .9, .9)},  # out-splits: not what selects
    (0, (0, 2)): {"env2_in_acc": (.40, .45, .70), "env2_out_acc": (.9, .9, .9)},
    (1, (0, 1)): {"env1_in_acc": (.90, .50, .50)},
    (1, (0, 2)): {"env2_in_acc": (.80, .50, .50)},
}


def _records() -> pd.DataFrame:
    """Trial 1 is trial 0 with every env0_in value + 0.1 (the same choices, test env 0's numbers 0.1 higher).

    Test envs 1 and 2: every validation value ties (0.5); their single runs' own in-split accuracy is
    0.1 * hparams_seed + step / 1000 + 0.01 * env, so the tie-breaking is visible.
    """
    rows = []
    for trial, h, combo in itertools.product((0, 1), (0, 1), COMBOS):
        for i, step in enumerate(STEPS):
            row = {"dataset": "D", "method": "erm", "trial_seed": trial, "hparams_seed": h, "test_envs": combo, "step": step}
            for env, split in itertools.product(range(3), ("in", "out")):
                row[f"env{env}_{split}_acc"] = 0.5
            if len(combo) == 1 and combo[0] in (1, 2):
                row[f"env{combo[0]}_in_acc"] = 0.1 * h + step / 1000 + 0.01 * combo[0]
            for key, values in HAND.get((h, combo), {}).items():
                row[key] = values[i]
            row["env0_in_acc"] += 0.1 * trial
            rows.append(row)
    return pd.DataFrame(rows)


def _chosen(rule: str) -> dict:
    sweep = selection.sweep_accs(_records(), rule)
    return {(int(r.trial_seed), int(r.test_env)): (int(r.hparams_seed), int(r.step), round(r.test_acc, 6)) for r in sweep.itertuples()}


def test_training_domain_validation():
    chosen = _chosen("iid")
    assert chosen[(0, 0)] == (1, 100, 0.60)
    assert chosen[(1, 0)] == (1, 100, 0.70)
    # every validation value ties: the highest hparams_seed, the earliest checkpoint
    assert chosen[(0, 1)] == (1, 0, 0.11) and chosen[(0, 2)] == (1, 0, 0.12)


def test_oracle_takes_the_last_checkpoint_selected_on_the_test_out_split():
    chosen = _chosen("oracle")
    assert chosen[(0, 0)] == (0, 200, 0.40)
    assert chosen[(1, 0)] == (0, 200, 0.50)
    assert chosen[(0, 1)] == (1, 200, 0.31) and chosen[(0, 2)] == (1, 200, 0.32)


def test_leave_one_domain_out():
    chosen = _chosen("loo")
    assert chosen[(0, 0)] == (1, 0, 0.50)
    assert chosen[(1, 0)] == (1, 0, 0.60)
    assert chosen[(0, 1)] == (1, 0, 0.11)


def test_leave_one_domain_out_needs_every_pair():
    frame = _records()
    frame = frame[frame["test_envs"] != (0, 2)]
    chosen = {(int(r.trial_seed), int(r.test_env)) for r in selection.sweep_accs(frame, "loo").itertuples()}
    assert (0, 0) not in chosen and (0, 2) not in chosen  # both lack the run holding out {0, 2}
    assert (0, 1) in chosen


def test_tables_mean_and_standard_error_over_trials():
    # training-domain validation: env 0 -> .60 and .70: 65.0 ± 100 * std([.6, .7]) / sqrt(2) = 3.5 (population std);
    # env 1 -> .11, .11; env 2 -> .12, .12; Avg (65 + 11 + 12) / 3 = 29.3
    sweep = selection.sweep_accs(_records(), "iid")
    assert selection.table_cells(sweep, "D", ["erm"], 3)["erm"] == ["65.0 ± 3.5", "11.0 ± 0.0", "12.0 ± 0.0", "29.3"]
    # averages: per trial the mean over envs (.27667, .31), then 29.3 ± 100 * 0.016667 / sqrt(2) = 1.2
    assert selection.averages(sweep, "erm", "D") == "29.3 ± 1.2"
    # a missing environment makes the Avg "X"
    assert selection.table_cells(sweep[sweep["test_env"] != 2], "D", ["erm"], 3)["erm"][-2:] == ["X", "X"]


def test_records_join_trials_and_curves():
    trials = pd.DataFrame({"trial_key": ["a", "b"], "dataset": "D", "method": "erm", "trial_seed": 0, "hparams_seed": 0,
                           "test_envs": ["0", "0,1"]})
    curves = pd.DataFrame({"trial_key": ["a", "a", "b"], "step": [100, 0, 0], "env0_in_acc": [0.2, 0.1, 0.3], "loss": 1.0})
    frame = selection.records(trials, curves)
    assert frame["test_envs"].tolist() == [(0,), (0,), (0, 1)]
    assert frame["step"].tolist() == [0, 100, 0] and "loss" not in frame


@pytest.mark.parametrize("text,expected", [("0", (0,)), ("0,2", (0, 2)), ("[1, 2]", (1, 2)), (3, (3,))])
def test_parse_envs(text, expected):
    assert selection.parse_envs(text) == expected
