"""The NAF study's data (docs bayes.md §a.1 N2/N5, §b): 2-D toy densities, ``mixture6``, ``digits63``, MAF's five sets.

- 2-D toys, as ``naf_examples`` ``naf/distributions.py`` and torchkit ``model_maf_toy.py``:
  ``mog4`` (weights 0.1/0.3/0.4/0.2 at (−5,0), (5,0), (0,5), (0,−5), unit covariance),
  ``grid10`` (``TenByTen``: 100 equal Gaussians at linspace(−5, 5, 10)², variance 1/(10 ln 10)),
  ``swissroll`` (sklearn ``make_swiss_roll(noise=0.5)`` columns (0, 2) / 3; no exact density).
- ``mixture6``: a 6-D mixture of a Gaussian, a Student-t (4 dof) and a sinh-arcsinh (skewed, heavy-tailed)
  component, all with full-rank linear maps; exact log-density; its entropy by a 2·10⁶-sample Monte Carlo
  (standard error printed with it, ≈ 2·10⁻³ nats).
- ``digits63``: sklearn's 1,797 8×8 digits, dequantised (x + U(0,1)) / 17, the last pixel dropped (BSDS300's 63),
  standardised with train moments; 1,257 / 270 / 270.
- MAF's POWER, GAS, HEPMASS, MINIBOONE, BSDS300 from the Zenodo ``data.tar.gz`` (record 1161203) extracted,
  with MAF's preprocessing (``gpapamak/maf/datasets/*.py`` = ``NAF/external_maf/*``, ported equation by equation).

Everything returns float32 arrays; bad or missing files raise :class:`core.data.DataError` with one line.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.data import DataError
from core.naf import hparams

LOG_2PI = float(np.log(2 * np.pi))

# ============================================================================ 2-D toys (N2)

TOY_DENSITIES = ("mog4", "grid10", "swissroll")
EXACT_DENSITIES = ("mog4", "grid10")  # swissroll: test NLL only


@dataclass(frozen=True)
class Mixture2D:
    """A 2-D isotropic Gaussian mixture: weights (M,), means (M, 2), one variance per component (M,)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray


@lru_cache(maxsize=None)
def toy_mixture(name: str) -> Mixture2D:
    """``mog4`` (model_maf_toy.py) or ``grid10`` (naf_examples TenByTen)."""
    if name == "mog4":
        return Mixture2D(np.array(hparams.MOG4["weights"]), np.array(hparams.MOG4["means"]), np.ones(4))
    if name == "grid10":
        axis = np.linspace(-5, 5, 10)
        gx, gy = np.meshgrid(axis, axis)
        means = np.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        return Mixture2D(np.full(100, 0.01), means, np.full(100, 1.0 / (10 * np.log(10))))
    raise ValueError(f"no mixture called {name!r}")


def mixture_log_prob(mix: Mixture2D, x: np.ndarray) -> np.ndarray:
    """log p(x) of a 2-D isotropic mixture at x (N, 2), float64."""
    x = np.asarray(x, dtype=np.float64)
    sq = ((x[:, None, :] - mix.means[None]) ** 2).sum(-1)  # (N, M)
    comp = np.log(mix.weights)[None] - LOG_2PI - np.log(mix.variances)[None] - 0.5 * sq / mix.variances[None]
    top = comp.max(1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(1, keepdims=True)))[:, 0]


def toy_sample(name: str, n: int, seed: int) -> np.ndarray:
    """n samples (n, 2) float32 of a 2-D toy density, deterministic in ``seed``."""
    rng = np.random.RandomState(seed)
    if name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        return (make_swiss_roll(n, noise=hparams.SWISSROLL_NOISE, random_state=rng)[0][:, [0, 2]] / 3.0).astype(np.float32)
    mix = toy_mixture(name)
    comp = rng.choice(len(mix.weights), size=n, p=mix.weights)
    x = mix.means[comp] + rng.randn(n, 2) * np.sqrt(mix.variances[comp])[:, None]
    return x.astype(np.float32)


def toy_log_prob(name: str, x: np.ndarray) -> np.ndarray:
    """Exact log-density of ``mog4`` / ``grid10`` at x (N, 2); ValueError for ``swissroll`` (no exact density)."""
    if name not in EXACT_DENSITIES:
        raise ValueError(f"{name} has no exact density")
    return mixture_log_prob(toy_mixture(name), x)


def toy_modes(name: str) -> np.ndarray:
    """The mixture means (mode-coverage checks)."""
    return toy_mixture(name).means


# ============================================================================ mixture6

MIXTURE6_DIM = 6
MIXTURE6_SPLITS = (50_000, 5_000, 20_000)
MIXTURE6_DOF = 4.0
MIXTURE6_ENTROPY_SAMPLES = 2_000_000


@dataclass(frozen=True)
class Mixture6:
    """weights (3,); per component a location (6,), a lower-triangular map L (6, 6); t dof; sinh-arcsinh skew, tail (6,)."""

    weights: np.ndarray
    locs: np.ndarray
    maps: np.ndarray
    dof: float
    skew: np.ndarray
    tail: np.ndarray


@lru_cache(maxsize=None)
def mixture6() -> Mixture6:
    """The fixed 6-D mixture (drawn once from RandomState(6); legacy RandomState is stable across numpy versions)."""
    rng = np.random.RandomState(6)
    d = MIXTURE6_DIM
    locs = rng.randn(3, d) * 1.5
    maps = np.stack([np.tril(rng.randn(d, d) * 0.3, -1) + np.diag(rng.uniform(0.4, 1.0, d)) for _ in range(3)])
    skew = rng.uniform(-1.0, 1.0, d)  # sinh-arcsinh epsilon: skewness
    tail = rng.uniform(0.6, 0.9, d)  # delta < 1: heavier tails than Gaussian
    return Mixture6(np.array([0.3, 0.3, 0.4]), locs, maps, MIXTURE6_DOF, skew, tail)


def _sinh_arcsinh_inverse(x: np.ndarray, skew: np.ndarray, tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z = sinh(δ asinh(x) − ε) and log|dz/dx| per coordinate (Jones & Pewsey 2009)."""
    inner = tail * np.arcsinh(x) - skew
    return np.sinh(inner), np.log(tail) + np.log(np.cosh(inner)) - 0.5 * np.log1p(x ** 2)


def mixture6_components(x: np.ndarray, mix: Mixture6 | None = None) -> np.ndarray:
    """log w_c + log p_c(x) for the three components, (N, 3) float64."""
    from scipy.special import gammaln

    mix = mix or mixture6()
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    out = []
    for c in range(3):
        L = mix.maps[c]
        u = np.linalg.solve(L, (x - mix.locs[c]).T).T  # L^{-1}(x - loc)
        logdet = -np.log(np.abs(np.diag(L))).sum()
        if c == 0:  # Gaussian
            lp = -0.5 * (u ** 2).sum(1) - 0.5 * d * LOG_2PI
        elif c == 1:  # multivariate Student-t
            nu = mix.dof
            lp = (gammaln((nu + d) / 2) - gammaln(nu / 2) - 0.5 * d * np.log(nu * np.pi)
                  - 0.5 * (nu + d) * np.log1p((u ** 2).sum(1) / nu))
        else:  # sinh-arcsinh per coordinate, then the linear map
            z, logjac = _sinh_arcsinh_inverse(u, mix.skew, mix.tail)
            lp = -0.5 * (z ** 2).sum(1) - 0.5 * d * LOG_2PI + logjac.sum(1)
        out.append(np.log(mix.weights[c]) + lp + logdet)
    return np.stack(out, 1)


def mixture6_log_prob(x: np.ndarray) -> np.ndarray:
    """Exact log-density of ``mixture6`` at x (N, 6), float64."""
    comp = mixture6_components(x)
    top = comp.max(1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(1, keepdims=True)))[:, 0]


def mixture6_sample(n: int, seed: int) -> np.ndarray:
    """n samples (n, 6) float64, deterministic in ``seed``."""
    mix = mixture6()
    rng = np.random.RandomState(seed)
    d = MIXTURE6_DIM
    comp = rng.choice(3, size=n, p=mix.weights)
    eps = rng.randn(n, d)
    chi = rng.chisquare(mix.dof, size=n)
    u = np.where((comp == 1)[:, None], eps / np.sqrt(chi / mix.dof)[:, None], eps)
    sas = np.sinh((np.arcsinh(eps) + mix.skew) / mix.tail)
    u = np.where((comp == 2)[:, None], sas, u)
    return mix.locs[comp] + np.einsum("nij,nj->ni", mix.maps[comp], u)


@lru_cache(maxsize=None)
def mixture6_entropy(n: int = MIXTURE6_ENTROPY_SAMPLES, seed: int = 12345) -> tuple[float, float]:
    """(entropy in nats, its Monte Carlo standard error) = −mean log p over n fresh samples, in chunks."""
    values = np.concatenate([mixture6_log_prob(mixture6_sample(min(250_000, n - i), seed + i)) for i in range(0, n, 250_000)])
    return float(-values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


# ============================================================================ tabular sets (N5 and its offline stand-ins)

TABULAR_OFFLINE = ("mixture6", "digits63")
TABULAR_MAF = hparams.UCI_DATASETS
TABULAR = (*TABULAR_OFFLINE, *TABULAR_MAF)


@dataclass(frozen=True)
class Tabular:
    """One density-estimation set: float32 train / validation / test (N, D); ``entropy`` = (nats, s.e.) when known."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    entropy: tuple[float, float] | None = None

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for part in (self.train, self.val, self.test):
            digest.update(str(part.shape).encode())
            digest.update(np.ascontiguousarray(part[:2000]).tobytes())
        return f"{self.name}-{digest.hexdigest()[:12]}"

    @property
    def description(self) -> str:
        return (f"{self.name}: {len(self.train):,} / {len(self.val):,} / {len(self.test):,} train / validation / test "
                f"points of dimension {self.dim} ({self.source})")


def load_mixture6(n_train: int = MIXTURE6_SPLITS[0], n_val: int = MIXTURE6_SPLITS[1], n_test: int = MIXTURE6_SPLITS[2],
                  seed: int = 0) -> Tabular:
    """``mixture6`` splits, each from its own seed (train / val / test never share a draw); raw coordinates."""
    parts = [mixture6_sample(n, 1000 * seed + k).astype(np.float32) for k, n in enumerate((n_train, n_val, n_test))]
    return Tabular("mixture6", *parts, source=f"6-D Gaussian + Student-t({MIXTURE6_DOF:g}) + sinh-arcsinh mixture, "
                   "exact log-density", entropy=mixture6_entropy())


DIGITS63_SPLITS = (1_257, 270, 270)


def load_digits63(seed: int = 0) -> Tabular:
    """sklearn digits: dequantised (x + U(0,1)) / 17, last pixel dropped, standardised with train moments; 1,257/270/270."""
    from sklearn.datasets import load_digits

    rng = np.random.RandomState(seed)
    x = load_digits().data.astype(np.float64)
    x = (x + rng.rand(*x.shape)) / 17.0
    x = x[rng.permutation(len(x))][:, :-1]
    n_train, n_val, _ = DIGITS63_SPLITS
    train, val, test = x[:n_train], x[n_train:n_train + n_val], x[n_train + n_val:]
    mu, sd = train.mean(0), train.std(0)
    parts = [((p - mu) / sd).astype(np.float32) for p in (train, val, test)]
    return Tabular("digits63", *parts, source="scikit-learn load_digits, dequantised, 63 of 64 pixels, train-standardised")


# ---------------------------------------------------------------------------- MAF's archive


def maf_root(data_dir: str | os.PathLike | None) -> Path:
    """The extracted archive's ``data`` folder (``data_dir`` itself or ``data_dir/data``); DataError when absent."""
    if not data_dir:
        raise DataError("the MAF sets need --data-dir with Zenodo 1161203's data.tar.gz extracted "
                        "(gensweep download maf-uci DIR)")
    base = Path(data_dir)
    for root in (base, base / "data"):
        if any((root / sub).is_dir() for sub in ("power", "gas", "hepmass", "miniboone", "BSDS300")):
            return root
    raise DataError(f"no MAF data under {base} (expected power/, gas/, hepmass/, miniboone/, BSDS300/: "
                    f"gensweep download maf-uci {base})")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"missing MAF data file {path} (gensweep download maf-uci DIR)")
    return path


def _split_tail(data: np.ndarray, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """MAF's split: the last int(fraction·N) rows apart."""
    n = int(fraction * data.shape[0])
    return data[:-n], data[-n:]


def _split_standardised(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's POWER / MINIBOONE tail: 10 % test, 10 % of the rest validation, standardised with train+val moments."""
    rest, test = _split_tail(data)
    train, val = _split_tail(rest)
    both = np.vstack((train, val))
    mu, s = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


def _maf_power(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """maf/datasets/power.py: shuffle (RandomState 42), drop columns 3 and 1, jitter, 10 % test, 10 % val, train+val moments."""
    rng = np.random.RandomState(42)
    data = np.load(_need(root / "power" / "data.npy"))
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    time_noise = np.zeros((n, 1))
    data = data + np.hstack((gap_noise, voltage_noise, sm_noise, time_noise))
    return _split_standardised(data)


def _maf_gas(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """maf/datasets/gas.py: drop Meth, Eth, Time; drop columns correlated > 0.98 one at a time; standardise; split."""
    import pandas as pd

    data = pd.read_pickle(_need(root / "gas" / "ethylene_CO.pickle"))
    data = data.drop(columns=["Meth", "Eth", "Time"])

    def counts() -> np.ndarray:
        return (data.corr() > 0.98).values.sum(axis=1)

    b = counts()
    while np.any(b > 1):
        data = data.drop(columns=[data.columns[int(np.where(b > 1)[0][0])]])
        b = counts()
    data = ((data - data.mean()) / data.std()).values
    rest, test = _split_tail(data)
    train, val = _split_tail(rest)
    return train, val, test


def _maf_hepmass(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """maf/datasets/hepmass.py: positive class, last test column dropped, train moments, features whose
    smallest value repeats > 5 times removed (the reference's ``sorted(c.items())[0]``), 10 % of train validates."""
    import pandas as pd

    train = pd.read_csv(_need(root / "hepmass" / "1000_train.csv"), index_col=False)
    test = pd.read_csv(_need(root / "hepmass" / "1000_test.csv"), index_col=False)
    train = train[train[train.columns[0]] == 1].drop(columns=[train.columns[0]])
    test = test[test[test.columns[0]] == 1]
    test = test.drop(columns=[test.columns[0]])
    test = test.drop(columns=[test.columns[-1]])
    mu, s = train.mean(), train.std()
    train, test = ((train - mu) / s).values, ((test - mu) / s).values
    drop = [i for i, feature in enumerate(train.T) if sorted(Counter(feature).items())[0][1] > 5]
    keep = np.array([i for i in range(train.shape[1]) if i not in drop])
    train, test = train[:, keep], test[:, keep]
    train, val = _split_tail(train)
    return train, val, test


def _maf_miniboone(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """maf/datasets/miniboone.py: the pre-cleaned data.npy, 10 % test, 10 % val, train+val moments."""
    data = np.load(_need(root / "miniboone" / "data.npy"))
    return _split_standardised(data)


def _maf_bsds300(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """maf/datasets/bsds300.py: the hdf5's train / validation / test (already 63-D)."""
    import h5py

    with h5py.File(_need(root / "BSDS300" / "BSDS300.hdf5"), "r") as f:
        return np.asarray(f["train"]), np.asarray(f["validation"]), np.asarray(f["test"])


_MAF_LOADERS = {"power": _maf_power, "gas": _maf_gas, "hepmass": _maf_hepmass, "miniboone": _maf_miniboone,
                "bsds300": _maf_bsds300}


def load_maf(name: str, data_dir: str | os.PathLike | None) -> Tabular:
    """One of MAF's five sets with MAF's preprocessing; DataError (one line) for a missing or unreadable archive."""
    root = maf_root(data_dir)
    try:
        train, val, test = _MAF_LOADERS[name](root)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read MAF data set {name} under {root}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    parts = [np.asarray(p, dtype=np.float32) for p in (train, val, test)]
    return Tabular(name, *parts, source=f"MAF archive (Zenodo 1161203) at {root}, MAF's preprocessing")


def load_tabular(name: str, data_dir: str | os.PathLike | None = None, n_train: int = MIXTURE6_SPLITS[0]) -> Tabular:
    """Any tabular set by name (``mixture6`` takes ``n_train``)."""
    if name == "mixture6":
        return load_mixture6(n_train=n_train)
    if name == "digits63":
        return load_digits63()
    if name in _MAF_LOADERS:
        return load_maf(name, data_dir)
    raise DataError(f"unknown tabular data set {name!r} (choose from {', '.join(TABULAR)})")


def download_maf_uci(directory: str | os.PathLike, url: str = hparams.MAF_ARCHIVE_URL) -> Path:
    """Download Zenodo 1161203's ``data.tar.gz`` into ``directory`` and extract it (→ ``directory/data/...``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "data.tar.gz"
    if not archive.is_file():
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(str(archive) + ".part", "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise DataError(f"cannot download {url}: {exc}") from None
        os.replace(str(archive) + ".part", archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(directory, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive}: {exc} (delete it and download again)") from None
    return maf_root(directory)


@dataclass(frozen=True)
class TabularSets:
    """The data sets of one naf-tabular sweep, by name (shipped once to the workers)."""

    sets: dict

    @property
    def fingerprint(self) -> str:
        return "+".join(self.sets[name].fingerprint for name in sorted(self.sets))

    @property
    def description(self) -> str:
        return "; ".join(self.sets[name].description for name in self.sets)
