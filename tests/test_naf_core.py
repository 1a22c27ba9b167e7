"""core/naf: toy densities, mixture6, digits63, MAF's preprocessing (on fake archives), the sine-wave posterior."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.data import DataError
from core.naf import data as nd
from core.naf import hparams
from core.naf import sinewave as sw


def grid_integral(log_prob, box: float, n: int = 801) -> float:
    axis = np.linspace(-box, box, n)
    gx, gy = np.meshgrid(axis, axis)
    p = np.exp(log_prob(np.stack([gx.ravel(), gy.ravel()], 1))).reshape(n, n)
    return float(np.trapezoid(np.trapezoid(p, axis, axis=1), axis))


# ---------------------------------------------------------------------------------------------- 2-D toys


def test_mog4_is_model_maf_toy():
    mix = nd.toy_mixture("mog4")
    assert mix.weights.tolist() == [0.1, 0.3, 0.4, 0.2]
    assert mix.means.tolist() == [[-5, 0], [5, 0], [0, 5], [0, -5]] and mix.variances.tolist() == [1, 1, 1, 1]
    assert grid_integral(lambda x: nd.toy_log_prob("mog4", x), 11.0) == pytest.approx(1.0, abs=1e-4)
    # at a mean the density is its weight / (2 pi) (the others are 7+ std away)
    assert np.exp(nd.toy_log_prob("mog4", np.array([[0.0, 5.0]])))[0] == pytest.approx(0.4 / (2 * math.pi), rel=1e-6)


def test_toy_samplers_follow_their_weights_and_means():
    x = nd.toy_sample("mog4", 200_000, 0).astype(np.float64)
    nearest = np.argmin(((x[:, None] - nd.toy_mixture("mog4").means[None]) ** 2).sum(-1), 1)
    assert np.bincount(nearest, minlength=4) / len(x) == pytest.approx([0.1, 0.3, 0.4, 0.2], abs=0.005)
    assert x[nearest == 2].std(0) == pytest.approx([1.0, 1.0], abs=0.02)
    assert nd.toy_sample("mog4", 10, 3).tolist() == nd.toy_sample("mog4", 10, 3).tolist()


def test_grid10_is_ten_by_ten():
    mix = nd.toy_mixture("grid10")
    assert len(mix.weights) == 100 and mix.weights.sum() == pytest.approx(1.0)
    assert sorted(set(mix.means[:, 0].round(6))) == pytest.approx(np.linspace(-5, 5, 10))
    assert mix.variances[0] == pytest.approx(1 / (10 * math.log(10)))
    assert grid_integral(lambda x: nd.toy_log_prob("grid10", x), 7.5, 1201) == pytest.approx(1.0, abs=1e-4)
    x = nd.toy_sample("grid10", 50_000, 1)
    assert np.abs(x).max() < 7.0 and x.std(0) == pytest.approx([3.19, 3.19], abs=0.05)


def test_swissroll_is_naf_examples():
    from sklearn.datasets import make_swiss_roll

    x = nd.toy_sample("swissroll", 500, 4)
    ref = make_swiss_roll(500, noise=0.5, random_state=np.random.RandomState(4))[0][:, [0, 2]] / 3.0
    assert np.allclose(x, ref, atol=1e-6)
    with pytest.raises(ValueError):
        nd.toy_log_prob("swissroll", x)


# ---------------------------------------------------------------------------------------------- mixture6


def test_mixture6_density_is_normalised_and_matches_its_sampler():
    x = nd.mixture6_sample(200_000, 3)
    lp = nd.mixture6_log_prob(x)
    # E_p[r / p] = 1 for a normalised Gaussian r (moment-matched; p's Student-t tails keep the variance finite)
    mu, cov = x.mean(0), np.cov(x.T)
    diff = x - mu
    r = -0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    ratio = np.exp(r - lp)
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / math.sqrt(len(ratio)) + 1e-3
    # the sampler draws each component with its weight: mean responsibilities = weights
    comp = nd.mixture6_components(x)
    resp = np.exp(comp - lp[:, None])
    assert resp.mean(0) == pytest.approx(nd.mixture6().weights, abs=0.005)


def test_mixture6_entropy_and_its_precision():
    h, se = nd.mixture6_entropy()
    assert se < 0.003
    assert h == pytest.approx(9.401, abs=0.01)  # pinned: a changed component, weight or tail moves it
    h2, se2 = nd.mixture6_entropy(400_000, seed=777)
    assert abs(h - h2) < 4 * math.hypot(se, se2)


def test_mixture6_splits_are_disjoint_draws():
    t = nd.load_mixture6(1000, 200, 300)
    assert (t.train.shape, t.val.shape, t.test.shape) == ((1000, 6), (200, 6), (300, 6))
    assert not np.allclose(t.train[:200], t.val) and t.entropy == nd.mixture6_entropy()
    assert nd.MIXTURE6_SPLITS == (50_000, 5_000, 20_000)


# ---------------------------------------------------------------------------------------------- digits63


def test_digits63_dequantised_standardised_last_pixel_dropped():
    t = nd.load_digits63()
    assert (t.train.shape, t.val.shape, t.test.shape) == ((1257, 63), (270, 63), (270, 63))
    assert np.abs(t.train.mean(0)).max() < 1e-4 and np.abs(t.train.std(0) - 1).max() < 1e-3
    # dequantised: a pixel takes many values, not the 17 levels of load_digits
    assert min(len(np.unique(col)) for col in t.train.T) > 500
    assert abs(t.test.mean()) < 0.2  # test uses the train moments
    assert nd.load_digits63().fingerprint == t.fingerprint


# ---------------------------------------------------------------------------------------------- MAF archive (fakes)


@pytest.fixture()
def fake_archive(tmp_path):
    import h5py
    import pandas as pd

    root = tmp_path / "data"
    rng = np.random.RandomState(0)
    (root / "power").mkdir(parents=True)
    np.save(root / "power" / "data.npy", rng.rand(1000, 8))  # 8 raw columns, MAF keeps 6
    (root / "miniboone").mkdir()
    np.save(root / "miniboone" / "data.npy", rng.randn(500, 43))
    (root / "gas").mkdir()
    cols = {f"c{i}": rng.randn(400) for i in range(8)}
    cols["dup"] = cols["c0"] * 2 + 0.001 * rng.randn(400)  # correlated > 0.98 with c0: one of them goes
    pd.DataFrame({"Meth": rng.randn(400), "Eth": rng.randn(400), "Time": np.arange(400.0), **cols}).to_pickle(root / "gas" / "ethylene_CO.pickle")
    (root / "hepmass").mkdir()
    feats = rng.randn(600, 22)
    feats[:, 5] = np.where(rng.rand(600) < 0.5, -1.0, 1.0)  # repeated smallest value: removed
    train = pd.DataFrame(np.hstack([(rng.rand(600, 1) < 0.5).astype(float), feats]), columns=["# label", *[f"f{i}" for i in range(22)]])
    train.to_csv(root / "hepmass" / "1000_train.csv", index=False)
    test = pd.DataFrame(np.hstack([np.ones((300, 1)), rng.randn(300, 22), rng.randn(300, 1)]), columns=["# label", *[f"f{i}" for i in range(22)], "mass"])
    test.to_csv(root / "hepmass" / "1000_test.csv", index=False)
    (root / "BSDS300").mkdir()
    with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for name, n in (("train", 100), ("validation", 20), ("test", 30)):
            f[name] = rng.randn(n, 63)
    return tmp_path


def test_power_is_mafs_preprocessing(fake_archive):
    t = nd.load_maf("power", fake_archive)
    assert (t.train.shape, t.val.shape, t.test.shape) == ((810, 6), (90, 6), (100, 6))  # 10 % test, then 10 % validation
    both = np.vstack([t.train, t.val]).astype(np.float64)
    assert np.abs(both.mean(0)).max() < 1e-5 and np.abs(both.std(0) - 1).max() < 1e-4
    # the same rows as MAF's code: RandomState(42) shuffle, columns 3 and 1 dropped, the tail is test; the time
    # column (last) gets no jitter, so it equals the raw values standardised with the train+validation moments
    rng = np.random.RandomState(42)
    raw = np.load(fake_archive / "data" / "power" / "data.npy")
    rng.shuffle(raw)
    raw = np.delete(np.delete(raw, 3, axis=1), 1, axis=1)
    time_col = raw[:, 5]
    assert np.allclose(t.test[:, 5], (time_col[-100:] - time_col[:-100].mean()) / time_col[:-100].std(), atol=1e-5)
    assert np.allclose(t.val[:, 5], (time_col[810:900] - time_col[:-100].mean()) / time_col[:-100].std(), atol=1e-5)


def test_miniboone_gas_hepmass_bsds300(fake_archive):
    m = nd.load_maf("miniboone", fake_archive)
    assert (m.train.shape, m.val.shape, m.test.shape) == ((405, 43), (45, 43), (50, 43))
    g = nd.load_maf("gas", fake_archive)
    assert g.dim == 8 and (len(g.train), len(g.val), len(g.test)) == (324, 36, 40)
    h = nd.load_maf("hepmass", fake_archive)
    assert h.dim == 21  # 22 features, the one with a repeated smallest value removed
    assert len(h.test) == 300 and len(h.val) == int(0.1 * (len(h.train) + len(h.val)))
    b = nd.load_maf("bsds300", fake_archive)
    assert (b.train.shape, b.val.shape, b.test.shape) == ((100, 63), (20, 63), (30, 63))
    assert nd.load_tabular("bsds300", fake_archive / "data").fingerprint == b.fingerprint  # the data folder itself also works


def test_missing_or_corrupt_archive_is_one_line(tmp_path, fake_archive):
    for data_dir in (None, tmp_path / "nothing"):
        with pytest.raises(DataError, match="maf-uci"):
            nd.load_tabular("power", data_dir)
    (fake_archive / "data" / "miniboone" / "data.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError) as err:
        nd.load_tabular("miniboone", fake_archive)
    assert "cannot read MAF data set miniboone" in str(err.value) and "\n" not in str(err.value)
    (fake_archive / "data" / "gas" / "ethylene_CO.pickle").unlink()
    with pytest.raises(DataError, match="missing MAF data file"):
        nd.load_tabular("gas", fake_archive)


def test_published_table_is_a1():
    pub = hparams.UCI_PUBLISHED
    assert pub["NAF DDSF (5)"]["power"] == (0.62, 0.01) and pub["MAF (5)"]["gas"] == (9.07, 0.02)
    gaps = [pub["NAF DDSF (5)"][d][0] - pub["MAF (5)"][d][0] for d in hparams.UCI_DATASETS]
    assert gaps == pytest.approx([0.48, 2.84, 2.61, 2.89, 2.04], abs=1e-9)
    assert set(hparams.MAF_DIMS) == set(hparams.UCI_DATASETS) == set(hparams.MAF_SPLITS)


# ---------------------------------------------------------------------------------------------- sine wave


def test_sinewave_energy_and_modes():
    t, y = sw.observations()
    assert t.tolist() == pytest.approx([0, 5 / 6, 10 / 6]) and y.abs().max() < 1e-12
    ll = sw.log_likelihood(torch.tensor([0.6, 1.2, 1.8, 0.9], dtype=torch.float64))
    assert ll[:3].abs().max() < 1e-12
    assert float(ll[3]) == pytest.approx(-4.0, rel=1e-9)  # sin(1.5 pi) = -1 at t = 5/6, sin(3 pi) = 0 at t = 10/6: -1 / 0.25
    f, lj = sw.squash(torch.tensor([0.0], dtype=torch.float64))
    assert float(f) == 1.0 and float(lj) == pytest.approx(math.log(0.5))
    assert sw.annealing(0, 100) == pytest.approx(0.2) and sw.annealing(80, 100) == 1.0 and sw.annealing(40, 100) == pytest.approx(0.7)


def test_true_posterior_quadrature_converged():
    ref_f = torch.linspace(0, 2, 2_000_001, dtype=torch.float64)
    ref_dens = torch.exp(sw.log_likelihood(ref_f))
    ref_logz = float(torch.log(torch.trapezoid(ref_dens, ref_f)))
    assert sw.log_z() == pytest.approx(ref_logz, abs=1e-9)
    masses = sw.true_mode_masses()
    ref = float(torch.trapezoid(ref_dens * ((ref_f - 0.6).abs() < 0.1), ref_f)) / math.exp(ref_logz)
    assert masses[0.6] == pytest.approx(ref, abs=3e-7)
    assert masses[0.6] == pytest.approx(0.27673, abs=2e-5) and masses[1.2] == pytest.approx(masses[1.8], abs=1e-5)
    assert sw.true_mass_near_zero() == pytest.approx(0.138366, abs=2e-5)


def test_q_metrics_are_reverse_kl_and_window_masses():
    """q = uniform on (0, 2) (f = 2 Phi(eps)): KL(q||p) = log 2 ... by direct quadrature in f; masses 0.1 each."""
    eps, w = sw.eps_grid()
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    f = 2 * normal.cdf(eps)
    log_q = torch.full_like(f, -math.log(2))
    rows = sw.q_metrics(f[None], log_q[None], w, sw.log_z())
    grid = sw.f_grid()
    p = torch.exp(sw.log_likelihood(grid) - sw.log_z())
    direct = float(torch.trapezoid(0.5 * (math.log(0.5) - torch.log(p)), grid))
    assert rows[0]["kl_nats"] == pytest.approx(direct, rel=2e-4)
    for c in sw.MODES:
        assert rows[0][f"mode_mass_{c}"] == pytest.approx(0.1, abs=2e-4)


def test_download_maf_uci_extracts_the_archive(tmp_path, fake_archive):
    """gensweep download maf-uci: fetch data.tar.gz (here a file:// URL), extract it, the loaders find data/."""
    import tarfile

    archive = tmp_path / "zenodo" / "data.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(fake_archive / "data", arcname="data")
    target = tmp_path / "maf"
    root = nd.download_maf_uci(target, url=archive.as_uri())
    assert root == target / "data" and nd.load_tabular("miniboone", target).dim == 43
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data.tar.gz").write_bytes(b"\x1f\x8b not a tar")
    with pytest.raises(DataError, match="cannot extract"):
        nd.download_maf_uci(bad, url=archive.as_uri())
