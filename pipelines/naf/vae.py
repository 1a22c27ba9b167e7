"""NAF's VAE experiment (N4; docs bayes.md §d.4) at CPU scale: a VAE whose posterior is a flow. Runs, no claim.

Varies: posterior (gaussian = plain VAE; maf / affine-gated / dsf / ddsf = a core.flows flow after the amortised
Gaussian), flows, seed. Fixed (N4 where it applies): Adam 1e-3, batch 64, clip 5, KL annealing from 1e-4, free bits
0.10, dynamic binarisation, best-validation-ELBO checkpoint; evaluation: test ELBO and the importance-weighted bound.
The amortised Gaussian z0 = μ(c) + σ(c)·ε from the encoder's last hidden layer c is the reference's first, context-fed
LinearFlow. ``faithful`` (off in every preset, so the recorded sweeps keep their ids): the flows conditioned on c as
the reference's cMADE, no trailing LinearFlow; off: flows shared across images plus core.flows' trailing LinearFlow.
Other deviations (core/naf/vae.py): MLP encoder / decoder, not the ResNets; context size = the encoder width, not
450; natural MADE order; smoke/cpu data: the MNIST test split from --data-dir (8k/1k/1k) or the embedded digits.
The paper's effect (IAF-DSF vs IAF-affine) is fractions of a nat at 400 epochs: no CPU-scale claim. Published
table: not available offline ("published: not entered").
"""
from __future__ import annotations

from core.naf import hparams
from core.naf import vae as nv
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from pipelines.naf import common
from tasks.naf import vae_trainable

V = hparams.VAE

SETTINGS = {
    "posteriors": Setting(["gaussian", "affine-gated", "dsf"], "posterior: gaussian (plain VAE) or a flow after it", choices=nv.POSTERIORS),
    "flows": Setting([1], "flows of the posterior (list)", ge=1, item=int),
    "seeds": Setting(1, "seeds per posterior", ge=1),
    "block_size": Setting(5, "seeds trained together in one trial", ge=1),
    "z_dim": Setting(16, f"latent dimensions (N4: {V['dimz']})", ge=1),
    "hidden": Setting(300, "MLP encoder / decoder width (2 hidden layers)", ge=1),
    "flow_hidden": Setting(64, "MADE width of the posterior flow (>= z_dim)", ge=1),
    "ds_dim": Setting(V["ds_dim"], "DSF/DDSF units (N4: 16)", ge=1),
    "ds_layers": Setting(V["ds_layers"], "DSF/DDSF blocks (N4: 1)", ge=1),
    "epochs": Setting(3, f"epochs (N4: {V['epochs']})", ge=1),
    "batch": Setting(V["batch"], "minibatch (N4: 64)", ge=1),
    "lr": Setting(V["lr"], "Adam learning rate (N4: 1e-3)", gt=0),
    "clip": Setting(V["clip"], "per-model gradient-norm clip (N4: 5)", gt=0),
    "polyak": Setting(0.0, f"Polyak decay (N4: {V['polyak']}; its zero-started average needs many steps)", ge=0, le=0.99999),
    "anneal_steps": Setting(1000, f"steps of KL annealing to weight 1 (N4: {V['anneal_steps']:,})", ge=1),
    "anneal_start": Setting(V["anneal_start"], "initial KL weight (N4: 1e-4)", ge=0, le=1),
    "free_bits": Setting(V["free_bits"], "free bits: the KL term is max(w KL, this) (N4: 0.10)", ge=0),
    "iw_samples": Setting(100, "importance samples of the test bound (the usual protocol: 2,000)", ge=1),
    "faithful": Setting(False, "vae_experiments.py's flows: every flow conditioned on the encoder's last hidden layer (cMADE "
                        "context), no trailing LinearFlow; false: one flow shared across images + a trailing LinearFlow "
                        "(the recorded runs)", opt_in=True),
}
PRESETS = {
    "smoke": {},
    "cpu": dict(epochs=20, seeds=2, posteriors=["gaussian", "affine-gated", "dsf", "ddsf"], anneal_steps=5_000, iw_samples=500),
    "paper": dict(epochs=V["epochs"], seeds=5, z_dim=V["dimz"], posteriors=["gaussian", "affine-gated", "dsf", "ddsf"],
                  anneal_steps=V["anneal_steps"], polyak=V["polyak"], iw_samples=2000, flow_hidden=V["hidden"]),
}
PRESET_HELP = {
    "smoke": "gaussian / affine-gated / dsf posteriors, z 16, 1 flow, 3 epochs, 1 seed; MNIST test split (--data-dir) or the "
             "embedded digits; MLP nets: runs, no claim",
    "cpu": "20 epochs, 4 posteriors, 2 seeds, IW bound with 500 samples: a trend only",
    "paper": "N4's sizes and schedule (400 epochs, Polyak 0.998, 2,000 importance samples) with our MLP nets and --data-dir "
             "images (not Larochelle's binarised MNIST): GPU-days",
}


def check(settings: dict) -> None:
    if any(p != "gaussian" for p in settings["posteriors"]) and settings["flow_hidden"] < settings["z_dim"]:
        raise GensweepError(f"bad value for flow_hidden: {settings['flow_hidden']} (must be >= z_dim {settings['z_dim']})")


def configs(settings: dict) -> list[dict]:
    keys = ("z_dim", "hidden", "flow_hidden", "ds_dim", "ds_layers", "epochs", "batch", "lr", "clip", "polyak", "anneal_steps",
            "anneal_start", "free_bits", "iw_samples")
    shared = []
    for posterior in settings["posteriors"]:
        for flows in ([0] if posterior == "gaussian" else settings["flows"]):
            extra = dict(context=settings["hidden"], final_linear=False) if settings["faithful"] and posterior != "gaussian" else {}
            shared.append(dict({k: settings[k] for k in keys}, transformer=posterior, flows=flows, **extra))
    return common.block_configs(shared, settings["seeds"], settings["block_size"])


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['transformer']} x{c['flows']} seed={c['seed']}"
    return [Stage("fits", vae_trainable, Grid(configs(settings)), metric="iw_bound", mode="max", label=label)]


def report(frame, curves, out_dir: str) -> str:
    rows = []
    for (posterior, flows), g in frame.groupby(["transformer", "flows"], sort=True):
        rows.append([posterior, int(flows), common.cell(list(g["elbo"]), 2), common.cell(list(g["iw_bound"]), 2),
                     f"{g['epochs_to_best'].mean():.0f}", f"{g['wall_s'].mean():.0f}", len(g), "published: not entered"])
    table = reports.markdown_table(["posterior", "flows", "test ELBO (nats)", "test IW bound (nats)", "epochs to best",
                                    "block wall (s)", "seeds", "published"], rows)
    return ("Test ELBO and importance-weighted bound (higher is better), best-validation checkpoint, mean ± s.e. over seeds. "
            + ("Flows conditioned on the encoder's context (faithful). " if "context" in frame and frame["context"].notna().any() else
               "Flows shared across images (no context; faithful=false). ")
            + "MLP encoder/decoder: not the paper's model; no claim at this scale. "
            "NAF's binarised-MNIST table (VAE / IAF-affine / IAF-DSF) is not available offline: published: not entered.\n\n" + table)


PIPELINE = Pipeline(
    name="naf-vae",
    description="NAF's VAE (N4) at CPU scale: flow posteriors after an amortised Gaussian, test ELBO and IW bound (runs, no claim)",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=lambda settings, data_dir: nv.load_images(data_dir),
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
