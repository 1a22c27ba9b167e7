"""Published NAF / MAF settings and result tables (docs bayes.md §a.1, §e): the one place they are written down.

Evidence tags as bayes.md: "V" verified in a cited file, "C" read from the
reference code, "R" recalled (not verified offline), "-" not available
offline. Presets, settings and reports read these names; nothing else
writes a published value down.
"""
from __future__ import annotations

# ------------------------------------------------------------------ N1: toy energy fitting (torchkit model_iaf_toy.py) [C]
# one IAF_DSF(2, hid 64, context 1, num_layers 4, num_ds_dim 5, num_ds_layers 2): one flow, cMADE num_layers 4 = 3 hidden
TOY_ENERGY = dict(hidden=64, hidden_layers=3, flows=1, ds_dim=5, ds_layers=2, batch=64, lr=5e-4, steps=10_000,
                  flip=False, final_linear=False, context=1, clip=0.0)  # sampled with context ones, no flip / LinearFlow, no clipping
TOY_ENERGY_AFFINE_DEEP = dict(hidden=128, flows=3)  # the commented affine comparator: 3 x IAF(2, 128, 1, 3) (2 hidden layers)

# ------------------------------------------------------------------ N2: toy density estimation (naf_examples DensityEstimator) [C]
TOY_DENSITY = dict(hidden=64, hidden_layers=2, flows=2, ds_dim=16, ds_layers=1, batch=64, lr=5e-3, steps=2_000, base_log_var=1.0)
MOG4 = dict(weights=(0.1, 0.3, 0.4, 0.2), means=((-5.0, 0.0), (5.0, 0.0), (0.0, 5.0), (0.0, -5.0)))  # model_maf_toy.py, unit cov
SWISSROLL_NOISE = 0.5  # naf_examples SwissRoll: sklearn make_swiss_roll(noise 0.5) columns (0, 2) / 3

# ------------------------------------------------------------------ N3: sine-wave posterior (NAF sf_sinewave.py) [C]
SINEWAVE = dict(f_true=0.6, t=(0.0, 5 / 6, 10 / 6), noise_var=0.25, f_max=2.0, ds_dim=24, lr=0.01, batch=320,
                steps=20_000, anneal_start=0.2, anneal_fraction=0.8)
SINEWAVE_MODES = (0.6, 1.2, 1.8)  # the three frequencies that pass the 3 points (paper's figure)

# ------------------------------------------------------------------ N5: NAF's maf_experiments.py defaults [C]
NAF_TABULAR = dict(hidden=100, hidden_layers=1, flows=5, ds_dim=16, ds_layers=1, lr=1e-4, batch=100, clip=5.0,
                   max_epochs=400, patience=30, polyak=0.0, seed=1993, base_log_var=1.0)  # density base N(0, e I): utils.log_normal(z, 0, 1)
# MAF's MADE widths per dataset (gpapamak/maf run_experiments.py) [C]; BSDS300 also 1024
MAF_HIDDEN = {"power": 100, "gas": 100, "hepmass": 512, "miniboone": 512, "bsds300": 512}
MAF_SPLITS = {  # (train, valid, test) [R], consistent with the loaders' 10 % splits
    "power": (1_659_917, 184_435, 204_928), "gas": (852_174, 94_685, 105_206), "hepmass": (315_123, 35_013, 174_987),
    "miniboone": (29_556, 3_284, 3_648), "bsds300": (1_000_000, 50_000, 250_000),
}
MAF_DIMS = {"power": 6, "gas": 8, "hepmass": 21, "miniboone": 43, "bsds300": 63}
MAF_ARCHIVE_URL = "https://zenodo.org/record/1161203/files/data.tar.gz"  # NAF download_datasets.py [C]

# ------------------------------------------------------------------ N5: published test log-likelihood (nats, higher better)
UCI_DATASETS = ("power", "gas", "hepmass", "miniboone", "bsds300")
# model -> dataset -> (mean, ±); [V] lupalab/tan README (NAF's ± over 5 runs; MAF-paper rows: 2 std of the mean over test points [R])
UCI_PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "NAF DDSF (5)": dict(power=(0.62, 0.01), gas=(11.91, 0.13), hepmass=(-15.09, 0.40), miniboone=(-8.86, 0.15), bsds300=(157.73, 0.04)),
    "NAF DDSF (10)": dict(power=(0.60, 0.02), gas=(11.96, 0.33), hepmass=(-15.32, 0.23), miniboone=(-9.01, 0.01), bsds300=(157.43, 0.30)),
    "MAF (5)": dict(power=(0.14, 0.01), gas=(9.07, 0.02), hepmass=(-17.70, 0.02), miniboone=(-11.75, 0.44), bsds300=(155.69, 0.28)),
    "MAF (10)": dict(power=(0.24, 0.01), gas=(10.08, 0.02), hepmass=(-17.73, 0.02), miniboone=(-12.24, 0.45), bsds300=(154.93, 0.28)),
    "MAF MoG (5)": dict(power=(0.30, 0.01), gas=(9.59, 0.02), hepmass=(-17.39, 0.02), miniboone=(-11.68, 0.44), bsds300=(156.36, 0.28)),
    "Real NVP (5)": dict(power=(-0.02, 0.01), gas=(4.78, 1.80), hepmass=(-19.62, 0.02), miniboone=(-13.55, 0.49), bsds300=(152.97, 0.28)),
    "Real NVP (10)": dict(power=(0.17, 0.01), gas=(8.33, 0.14), hepmass=(-18.71, 0.02), miniboone=(-13.84, 0.52), bsds300=(153.28, 1.78)),
    "MADE": dict(power=(-3.08, 0.03), gas=(3.56, 0.04), hepmass=(-20.98, 0.02), miniboone=(-15.59, 0.50), bsds300=(148.85, 0.28)),
    "MADE MoG": dict(power=(0.40, 0.01), gas=(8.47, 0.02), hepmass=(-15.15, 0.02), miniboone=(-12.27, 0.47), bsds300=(153.71, 0.28)),
}
# §e anchors on the same five sets: name -> (tag, dataset -> (mean, ± or None))
UCI_ANCHORS: dict[str, tuple[str, dict[str, tuple[float, float | None]]]] = {
    "FFJORD": ("V", dict(power=(0.46, None), gas=(8.59, None), hepmass=(-14.92, None), miniboone=(-10.43, None), bsds300=(157.40, None))),
    "TAN": ("V", dict(power=(0.60, 0.01), gas=(12.06, 0.02), hepmass=(-13.78, 0.02), miniboone=(-11.01, 0.48), bsds300=(159.80, 0.07))),
    "SOS": ("V", dict(power=(0.60, 0.01), gas=(11.99, 0.41), hepmass=(-15.15, 0.10), miniboone=(-8.90, 0.11), bsds300=(157.48, 0.41))),
    "B-NAF": ("R", dict(power=(0.61, None), gas=(12.06, None), hepmass=(-14.71, None), miniboone=(-8.95, None), bsds300=(157.36, None))),
    "RQ-NSF (AR)": ("R", dict(power=(0.66, None), gas=(13.09, None), hepmass=(-14.01, None), miniboone=(-9.22, None), bsds300=(157.31, None))),
}
UCI_TAG = "V"

# ------------------------------------------------------------------ N4: VAE (NAF vae_experiments.py) [C]; published table [-]
VAE = dict(dimz=32, dimc=450, hidden=1920, lr=1e-3, batch=64, epochs=400, clip=5.0, polyak=0.998, anneal_steps=50_000,
           anneal_start=1e-4, free_bits=0.10, ds_dim=16, ds_layers=1)
VAE_PUBLISHED = None  # ELBO / log p(x) on binarized MNIST, VAE / IAF-affine / IAF-DSF: not available offline
