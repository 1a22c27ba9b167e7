"""BHN evaluation pieces against the references (docs bayes.md §d.9 BHN 5, 6, 7): OOD scores and metrics
(dk_anomaly_detection.py, H&G's MNIST_Softmax_Stats.ipynb), active-learning bookkeeping (dk_AL.py, AL_helpers.py),
FGS on the MC-averaged predictive (FGS_eval.py), and the data partitions / OOD sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.bhn import active, adversarial, data, ood
from core.data import DataError

from conftest import SHARED_MNIST

# ============================================================================ metrics (BHN 6)


def _sklearn_get_results(ins, oos):
    """dk_anomaly_detection.get_results with scikit-learn, unrounded."""
    sk = pytest.importorskip("sklearn.metrics")
    y_true = np.hstack((np.ones(len(ins)), np.zeros(len(oos))))
    y_score = np.hstack((ins, oos))
    return [100 * sk.roc_auc_score(y_true, y_score), 100 * sk.average_precision_score(y_true, y_score),
            100 * sk.average_precision_score(1 - y_true, -y_score)]


@pytest.mark.parametrize("seed", range(4))
def test_detection_equals_sklearn_with_reference_signs(seed):
    rng = np.random.default_rng(seed)
    ins = np.round(rng.normal(1.0, 1.0, 150), 1)  # rounded: many ties, within and across the two sets
    oos = np.round(rng.normal(0.0, 1.5, 90), 1)
    got = ood.detection(ins, oos)
    ref = _sklearn_get_results(ins, oos)
    assert [got["auroc"], got["aupr_in"], got["aupr_out"]] == pytest.approx(ref, abs=1e-9)


def test_detection_hand_computed():
    # in 0.9, 0.8; out 0.85, 0.1: pairs (in > out) 3 of 4; AP-in: hits at ranks 1 and 3 -> (1 + 2/3) / 2;
    # AP-out on the negated scores: out first (-0.1), then in, out (-0.85), in -> (1 + 2/3) / 2
    got = ood.detection(np.array([0.9, 0.8]), np.array([0.85, 0.1]))
    assert got["auroc"] == pytest.approx(75.0)
    assert got["aupr_in"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert got["aupr_out"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # a perfect separation and a full tie
    assert ood.detection([3.0, 2.0], [1.0, 0.0]) == {"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0}
    assert ood.detection([1.0], [1.0])["auroc"] == pytest.approx(50.0)
    assert ood.detection([1.0, 1.0], [1.0, 1.0])["aupr_in"] == pytest.approx(50.0)


def test_map_max_prob_on_a_fixed_toy():
    """A deterministic (map: S = 1) model's max-prob numbers, computed by hand."""
    p_in = torch.tensor([[[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]]])  # max prob 0.9, 0.7, 0.6
    p_out = torch.tensor([[[0.5, 0.5], [0.35, 0.65]]])  # 0.5, 0.65
    got = ood.ood_metrics(p_in, p_out, scores=("max_prob",))["max_prob"]
    # pairs in > out: 0.9 > both, 0.7 > both, 0.6 > 0.5 only: 5 of 6
    assert got["auroc"] == pytest.approx(100 * 5 / 6)
    # in positive, descending 0.9 in, 0.7 in, 0.65 out, 0.6 in, 0.5 out: precisions 1, 1, 3/4
    assert got["aupr_in"] == pytest.approx(100 * (1 + 1 + 3 / 4) / 3)
    # out positive on -score: -0.5 out, -0.6 in, -0.65 out, ...: precisions 1, 2/3
    assert got["aupr_out"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_error_detection_counts_correct_as_positive():
    probs = torch.tensor([[[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]])
    labels = torch.tensor([0, 0, 1, 1])  # the third input is wrong (predicted 0) and the least confident
    got = ood.error_detection(probs, labels, "max_prob")
    assert got == pytest.approx({"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0})
    labels = torch.tensor([1, 0, 0, 1])  # now the most confident input is the wrong one
    assert ood.error_detection(probs, labels, "max_prob")["auroc"] == pytest.approx(0.0)


# ============================================================================ scores


def _disagree_and_agree():
    """Input 0: two samples that disagree completely; input 1: two that agree, confident."""
    return torch.tensor([[[1.0, 0.0], [0.9, 0.1]], [[0.0, 1.0], [0.9, 0.1]]])  # (S=2, N=2, C=2)


def test_scores_hand_computed():
    probs = _disagree_and_agree()
    h01 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert ood.predictive_entropy(probs).tolist() == pytest.approx([math.log(2), h01])
    assert ood.mutual_information(probs).tolist() == pytest.approx([math.log(2), 0.0], abs=1e-7)
    assert ood.mutual_information(probs, base=2).tolist() == pytest.approx([1.0, 0.0], abs=1e-7)
    assert ood.mean_std(probs).tolist() == pytest.approx([0.5, 0.0], abs=1e-7)
    assert ood.variation_ratio(probs).tolist() == pytest.approx([0.5, 0.0])
    conf = {s: ood.confidence(probs, s) for s in ood.SCORES}
    for s in ood.SCORES:  # the agreeing, confident input is the more in-distribution one under every score
        assert conf[s][1] > conf[s][0], s
    assert conf["max_prob"].tolist() == pytest.approx([0.5, 0.9])


def test_scores_equal_the_references_scipy_formulas():
    """dk_anomaly_detection.py's score functions (scipy.stats.entropy, natural log) up to the max_ent sign fix."""
    st = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(7, 11, 5, generator=gen, dtype=torch.float64), -1)
    s = probs.numpy()
    bald = -(st.entropy(s.mean(0).T) - st.entropy(s.transpose(2, 0, 1)).mean(0))
    max_ent = st.entropy(s.mean(0).T)
    mean_std = -(np.maximum((s ** 2).mean(0) - s.mean(0) ** 2, 0) ** 0.5).mean(-1)
    var_ratio = s.mean(0).max(-1)  # the reference's "var_ratio" score is our max_prob
    assert ood.confidence(probs, "bald").numpy() == pytest.approx(bald)
    assert ood.confidence(probs, "entropy").numpy() == pytest.approx(-max_ent)  # the reference forgot this minus
    assert ood.confidence(probs, "mean_std").numpy() == pytest.approx(mean_std)
    assert ood.confidence(probs, "max_prob").numpy() == pytest.approx(var_ratio)
    votes = np.stack([(s.argmax(-1) == c).sum(0) for c in range(5)], -1)  # dk_AL.py var_ratio: 1 - mode / S
    assert (-ood.confidence(probs, "var_ratio")).numpy() == pytest.approx(1 - votes.max(-1) / 7)
    with pytest.raises(ValueError, match="unknown score"):
        ood.confidence(probs, "margin")


# ============================================================================ active learning (BHN 5)


def test_acquisition_values_as_dk_al():
    """dk_AL.py's bald / max_ent loops (log2), var_ratio (mode of the sample argmaxes), mean_std (acquisition_functions)."""
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(2 * torch.randn(9, 13, 10, generator=gen, dtype=torch.float64), -1)
    s = probs.numpy()
    avg = s.mean(0)
    g_x = -(avg * np.log2(avg)).sum(1)
    f_x = sum(-(p * np.log2(p)).sum(1) for p in s) / len(s)
    assert active.acquisition_values(probs, "bald").numpy() == pytest.approx(g_x - f_x)
    assert active.acquisition_values(probs, "max_ent").numpy() == pytest.approx(g_x)
    modes = np.array([np.bincount(s[:, t].argmax(-1), minlength=10).max() for t in range(13)])
    assert active.acquisition_values(probs, "var_ratio").numpy() == pytest.approx(1 - modes / 9)
    assert active.acquisition_values(probs, "mean_std").numpy() == pytest.approx(s.std(0).mean(-1))
    with pytest.raises(ValueError):
        active.acquisition_values(probs, "random")


def test_initial_set_is_the_first_two_of_each_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    candidates, pool = active.candidate_pool_split(500, 100, seed=3)
    assert sorted(np.r_[candidates, pool].tolist()) == list(range(500))
    assert not np.array_equal(candidates, np.arange(100))  # shuffled
    init = active.initial_labelled(labels, candidates)
    expected = []
    for c in range(10):  # AL_helpers.get_initial_training_data: np.where(y == c)[0][0:2] of the shuffled candidates
        expected += candidates[np.where(labels[candidates] == c)[0][0:2]].tolist()
    assert init.tolist() == expected
    assert labels[init].tolist() == [c for c in range(10) for _ in range(2)]
    state = active.initial_state(labels, 100, seed=3)
    assert state.labelled.tolist() == expected and np.array_equal(state.pool, pool)


def _scripted(idx):
    """A scripted scorer: the value of an image is its index modulo 97 (deterministic, ties broken by position)."""
    return (np.asarray(idx) % 97).astype(float)


def _reference_loop(pool, labelled, steps, subset, queries, seed):
    """dk_AL.py's bookkeeping written as the reference (one rng draw per step for the scored subset)."""
    rng = np.random.default_rng(seed)
    pool_x, train_x, history = pool.copy(), labelled.copy(), []
    for _ in range(steps):
        pool_subset_dropout = rng.choice(len(pool_x), subset, replace=False)
        x_pool_dropout = pool_x[pool_subset_dropout]
        x_pool_index = np.argsort(_scripted(x_pool_dropout), kind="stable")[-queries:][::-1]
        pooled_x = x_pool_dropout[x_pool_index]
        pool_x = np.concatenate((pool_x, x_pool_dropout), axis=0)  # the re-append; delete_* unused
        train_x = np.concatenate((train_x, pooled_x), axis=0)
        history.append((len(pool_x), pooled_x))
    return pool_x, train_x, history


def test_pool_semantics_reference_reproduces_the_growing_pool():
    state = active.PoolState(np.arange(20), np.arange(20, 420))
    ref_pool, ref_train, history = _reference_loop(state.pool, state.labelled, 12, 150, 10, seed=7)
    rng = np.random.default_rng(7)
    for pool_len, pooled in history:
        state, acquired = active.acquire(state, _scripted, 10, 150, rng, semantics="reference")
        assert np.array_equal(acquired, pooled)
        assert len(state.pool) == pool_len
    assert np.array_equal(state.pool, ref_pool) and np.array_equal(state.labelled, ref_train)
    assert len(state.pool) == 400 + 12 * 150  # grows by the subset every step
    assert len(np.unique(state.labelled)) < len(state.labelled)  # acquired images stay acquirable: some come back


def test_pool_semantics_remove_never_reacquires():
    state = active.PoolState(np.arange(20), np.arange(20, 420))
    rng = np.random.default_rng(7)
    for step in range(25):
        state, acquired = active.acquire(state, _scripted, 10, 150, rng, semantics="remove")
        assert len(state.pool) == 400 - 10 * (step + 1)
        assert not np.isin(acquired, state.pool).any()
        values = _scripted(acquired)
        assert list(values) == sorted(values, reverse=True)  # the highest first
    assert len(np.unique(state.labelled)) == len(state.labelled) == 20 + 250
    assert sorted(np.r_[state.labelled, state.pool].tolist()) == list(range(420))  # nothing lost, nothing twice


def test_random_acquisition_and_bad_sizes():
    state = active.PoolState(np.arange(2), np.arange(2, 52))
    new, acquired = active.acquire(state, None, 5, 20, np.random.default_rng(0))
    assert len(set(acquired.tolist())) == 5 and np.isin(acquired, state.pool).all()
    assert len(new.pool) == 45
    with pytest.raises(ValueError, match="larger than the pool"):
        active.acquire(state, None, 5, 51, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_acquire"):
        active.acquire(state, None, 21, 20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="pool semantics"):
        active.acquire(state, None, 5, 20, np.random.default_rng(0), semantics="keep")
    probs_fn = lambda idx: torch.softmax(torch.randn(4, len(idx), 3), -1)
    assert active.probs_values_fn(probs_fn, "random") is None
    assert active.probs_values_fn(probs_fn, "bald")(np.arange(6)).shape == (6,)


# ============================================================================ FGS (BHN 7)


def _stochastic_linear(samples=6, d=8, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = 2 * torch.randn(samples, d, c, generator=gen, dtype=torch.float64)
    b = torch.randn(samples, 1, c, generator=gen, dtype=torch.float64)
    return lambda x: torch.softmax(torch.einsum("nd,sdc->snc", x, w) + b, -1)


def test_fgs_direction_is_the_gradient_of_the_averaged_predictive():
    probs_fn = _stochastic_linear()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    xr = x.clone().requires_grad_(True)
    avg = probs_fn(xr).mean(0)
    loss = torch.nn.functional.nll_loss(torch.log(avg), y)
    (grad,) = torch.autograd.grad(loss, xr)
    direction = adversarial.fgs_direction(probs_fn, x, y)
    assert torch.equal(direction, grad.sign())
    # and not the one-sample nor the mean-of-per-sample-CE direction (they differ on this model)
    xr = x.clone().requires_grad_(True)
    one = torch.autograd.grad(torch.nn.functional.nll_loss(torch.log(probs_fn(xr)[0]), y), xr)[0].sign()
    xr = x.clone().requires_grad_(True)
    per = torch.autograd.grad(torch.nn.functional.nll_loss(torch.log(probs_fn(xr)).flatten(0, 1), y.repeat(6)), xr)[0].sign()
    assert not torch.equal(direction, one) and not torch.equal(direction, per)
    x_adv = adversarial.fgs(probs_fn, x, y, 0.1, chunk=7)
    assert torch.allclose(x_adv, x + 0.1 * grad.sign())


def test_fgs_eval_rows():
    probs_fn = _stochastic_linear(seed=2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(60, 8, generator=gen, dtype=torch.float64)
    y = probs_fn(x).mean(0).argmax(-1)  # every clean input is classified correctly
    y[:6] = (y[:6] + 1) % 3  # except six
    rows = adversarial.fgs_eval(probs_fn, probs_fn, x, y, eps=(0.05, 1.0))
    assert [r["eps"] for r in rows] == [0.0, 0.05, 1.0]
    assert rows[0]["acc"] == pytest.approx(0.9)
    assert rows[2]["acc"] < rows[0]["acc"]
    assert "auroc_bald" not in rows[0] and set(f"auroc_{s}" for s in adversarial.FGS_SCORES) <= set(rows[1])
    assert all(0 <= rows[1][f"auroc_{s}"] <= 100 for s in adversarial.FGS_SCORES)
    assert len(adversarial.EPSILONS) == 20 and adversarial.EPSILONS[0] == 0.001 and adversarial.EPSILONS[-1] == 0.5


# ============================================================================ data


def _fake_images(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def test_split_holds_out_a_class_as_the_reference():
    x, y = _fake_images()
    split = data.make_split(x, y, (600, 100, 300), seed=5, exclude=3)
    assert split.classes == (0, 1, 2, 4, 5, 6, 7, 8, 9) and split.num_classes == 9
    order = np.random.default_rng(5).permutation(1000)
    train, valid, test = order[:600], order[600:700], order[700:]
    relabel = {c: i for i, c in enumerate(split.classes)}
    for part, xs, ys in ((train, split.x_train, split.y_train), (valid, split.x_valid, split.y_valid),
                         (test, split.x_test, split.y_test)):
        keep = part[y[part] != 3]
        assert np.array_equal(xs, x[keep])
        assert ys.tolist() == [relabel[c] for c in y[keep]]
    assert np.array_equal(split.x_heldout, x[train[y[train] == 3]])  # the training part's 3s (train_x2)
    again = data.make_split(x, y, (600, 100, 300), seed=5)
    assert np.array_equal(again.x_train, split.x_train)
    assert not np.array_equal(data.make_split(x, y, (600, 100, 300), seed=6).x_train[:50], split.x_train[:50])
    full = data.make_split(x, y, (600, 0, 300), seed=5, exclude=None)
    assert full.num_classes == 10 and len(full.x_heldout) == 0 and len(full.x_valid) == 0 and len(full.x_train) == 600
    ordered = data.make_split(x, y, (500, 200, 300), seed=5, exclude=None, shuffle=False)
    assert np.array_equal(ordered.x_valid, x[500:700])
    with pytest.raises(ValueError, match="held-out class"):
        data.make_split(x, y, (600, 100, 300), seed=5, exclude=10)
    with pytest.raises(ValueError, match="do not fit"):
        data.make_split(x, y, (900, 100, 300), seed=5)


def test_ood_sets():
    x, y = _fake_images()
    split = data.make_split(x, y, (600, 100, 300), seed=0)
    n = len(split.x_test)
    uni, gau = data.ood_set("uniform", split, 1), data.ood_set("gaussian", split, 1)
    assert uni.shape == gau.shape == (n, 784) and uni.dtype == gau.dtype == np.float32
    assert 0 <= uni.min() and uni.max() < 1
    assert gau.min() < -3 and gau.max() > 3 and abs(gau.mean()) < 0.01 and abs(gau.std() - 1) < 0.01  # unclipped N(0, 1)
    assert np.array_equal(data.ood_set("uniform", split, 1), uni)
    assert np.array_equal(data.ood_set("inverted", split, 1), 1 - split.x_test)
    perm = data.ood_set("permuted", split, 1)
    assert np.array_equal(np.sort(perm, 1), np.sort(split.x_test, 1))  # each image's pixels, rearranged
    where = np.array([np.flatnonzero((perm == split.x_test[:, [j]]).all(0))[0] for j in range(20)])
    assert len(set(where.tolist())) == 20 and not np.array_equal(perm, split.x_test)  # one permutation for all images
    assert np.array_equal(data.ood_set("heldout", split, 1), split.x_heldout)
    with pytest.raises(ValueError, match="unknown OOD set"):
        data.ood_set("svhn", split, 1)
    with pytest.raises(ValueError, match="needs MNIST"):
        data.ood_set("deformed", split, 1, in_distribution="deformed-digits")
    with pytest.raises(ValueError, match="exclude"):
        data.ood_set("heldout", data.make_split(x, y, (600, 100, 300), seed=0, exclude=None), 1)


@pytest.mark.parametrize("name", data.PAPER_OOD_SETS)
def test_paper_sets_missing_files_are_one_line(name, tmp_path):
    x, y = _fake_images()
    split = data.make_split(x, y, (600, 100, 300), seed=0)
    for where in (None, tmp_path):
        with pytest.raises(DataError) as err:
            data.ood_set(name, split, 0, data_dir=where)
        assert "\n" not in str(err.value) and "gensweep download" in str(err.value)


def test_cifar10bw_and_notmnist_loaders(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": raw, "labels": [0, 1, 2, 3]}, f)
    grey = data.load_cifar10bw(tmp_path)
    assert grey.shape == (4, 784) and 0 <= grey.min() and grey.max() <= 1
    flat = np.full((1, 3072), 255, dtype=np.uint8)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": flat, "labels": [0]}, f)
    assert data.load_cifar10bw(tmp_path) == pytest.approx(np.full((1, 784), sum(data.GREY)), abs=1e-5)
    with open(tmp_path / "notMNIST.pickle", "wb") as f:
        pickle.dump({"test_dataset": np.full((3, 28, 28), -0.5, dtype=np.float32)}, f)
    assert np.array_equal(data.load_notmnist(tmp_path), np.zeros((3, 784), np.float32))
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read"):
        data.load_cifar10bw(tmp_path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_load_mnist_test_split():
    x, y = data.load_images(SHARED_MNIST)
    assert x.shape == (10000, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 1 and sorted(np.unique(y).tolist()) == list(range(10))
    with pytest.raises(DataError, match="not found"):
        data.load_images(SHARED_MNIST / "nowhere")


def test_load_images_reads_both_splits_training_first(tmp_path):
    """The paper presets' 50k / 10k / 10k (mnist.pkl.gz's order, make_split with shuffle=False) need both MNIST splits:
    the training split first, then the test split; labels outside 0-9 are refused."""
    from test_cmnist_data import write_idx

    train = np.full((6, 28, 28), 255, np.uint8)
    test = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(6) + 4)
    x, y = data.load_images(tmp_path)
    assert x.shape == (10, 784) and y.tolist() == [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]
    assert (x[:6] == 1).all() and (x[6:] == 0).all()
    split = data.make_split(x, y, (5, 1, 4), seed=0, exclude=None, shuffle=False)
    assert (split.x_test == 0).all() and len(split.x_valid) == 1
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 10]))
    with pytest.raises(DataError, match="outside 0-9"):
        data.load_images(tmp_path)


@pytest.mark.slow
def test_deformed_digits_ood_set():
    x, y = _fake_images()
    split = data.make_split(x, y, (600, 100, 300), seed=0)
    deformed = data.ood_set("deformed", split, 0)
    assert deformed.shape == (len(split.x_test), 784) and 0 <= deformed.min() and deformed.max() <= 1
