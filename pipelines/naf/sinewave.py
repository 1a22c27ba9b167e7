"""NAF's sine-wave posterior (N3, sf_sinewave.py; docs bayes.md §d.2): can q cover the three frequency modes?

Varies: transformer of the 1-D flow q (dsf = the reference's one SigmoidFlow, d = 24; maf = affine: a Gaussian
then 2σ), flows, seed. Fixed (N3): Adam 0.01, batch 320, energy annealing w = min(1, 0.2 + it / (0.8·total)),
20,000 iterations (smoke 2,000), no gradient clipping. One flow on N(0, 1) noise, then f = 2σ(h); in 1-D the MADE
has no inputs, so its outputs are free parameters (an unconditional transformer); ``faithful`` drops core.flows'
final elementwise affine, which sf_sinewave.py does not have.
Metrics (exact by quadrature over q's noise; the true posterior by 1-D quadrature on (0, 2)): ``kl_nats`` =
KL(q‖p), ``mode_mass_0.6/1.2/1.8`` = q's mass within ±0.1 of each mode, ``mass_near_0`` (f < 0.1, the boundary mode).
Report: table with the true masses, the issue's checks, histograms of q's samples over the true posterior.
"""
from __future__ import annotations

import numpy as np
import torch

from core.naf import hparams
from core.naf import sinewave as sw
from pipelines.engine import reports
from pipelines.engine.spec import Grid, NoData, Pipeline, Setting, Stage
from pipelines.naf import common
from core.naf.metrics import SINE_HIST_BINS, decode_grid
from tasks.naf import sinewave_trainable

S = hparams.SINEWAVE
MODE_KEYS = [f"mode_mass_{c}" for c in sw.MODES]

SETTINGS = {
    "transformers": common.transformers_setting(["maf", "dsf"], "q's transformer (dsf = the reference's SigmoidFlow; maf = Gaussian)"),
    "flows": Setting([1], "flows of q (list; the reference: 1)", ge=1, item=int),
    "seeds": Setting(2, "seeds per q", ge=1),
    "block_size": Setting(5, "seeds trained together in one trial", ge=1),
    "steps": Setting(2000, f"Adam steps (N3: {S['steps']:,})", ge=1),
    "batch": Setting(S["batch"], "noise samples per step (N3: 320)", ge=1),
    "lr": Setting(S["lr"], "Adam learning rate (N3: 0.01)", gt=0),
    "ds_dim": Setting(S["ds_dim"], "sigmoid units of the DSF (N3: 24)", ge=1),
    "ds_layers": Setting(1, "DSF blocks per flow", ge=1),
    "hidden": Setting(8, "MADE width (1-D: only sets the channels into the DSF parameters)", ge=1),
    "clip": Setting(0.0, "per-model gradient-norm clip (0: none, as sf_sinewave.py)", ge=0),
    "faithful": Setting(True, "sf_sinewave.py's q: the flow alone, no final elementwise affine (core.flows' LinearFlow)"),
    "eval_every": Setting(1000, "steps between progress reports", ge=1),
}
PRESETS = {
    "smoke": {},
    "cpu": dict(seeds=5, steps=S["steps"], flows=[1, 2]),
    "paper": dict(seeds=5, steps=S["steps"], flows=[1, 2]),
}
PRESET_HELP = {
    "smoke": "maf and dsf q, 1 flow, 2 seeds, 2,000 iterations (not 20,000): runs, no claim",
    "cpu": "N3 as the reference (20,000 iterations), maf and dsf q with 1 and 2 flows, 5 seeds",
    "paper": "as cpu (the paper has only the figure)",
}


def configs(settings: dict) -> list[dict]:
    keys = ("steps", "batch", "lr", "ds_dim", "ds_layers", "hidden", "clip", "eval_every")
    shared = [dict({k: settings[k] for k in keys}, target="sinewave", transformer=t, flows=f, hidden_layers=1,
                   **({"final_linear": False} if settings["faithful"] else {}))
              for t in settings["transformers"] for f in settings["flows"]]
    return common.block_configs(shared, settings["seeds"], settings["block_size"])


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['transformer']} x{c['flows']} seed={c['seed']}"
    return [Stage("fits", sinewave_trainable, Grid(configs(settings)), metric="kl_nats", mode="min", label=label)]


def covers(row, share: float = 0.15) -> bool:
    return all(row[k] >= share for k in MODE_KEYS)


def collapsed(row, share: float = 0.9) -> bool:
    return max(*(row[k] for k in MODE_KEYS), row.get("mass_near_0", 0.0)) >= share


def report(frame, curves, out_dir: str) -> str:
    true = sw.true_mode_masses()
    rows = [["true posterior", "", "0", *(f"{true[c]:.3f}" for c in sw.MODES), f"{sw.true_mass_near_zero():.3f}", "", ""]]
    lines = []
    for (transformer, flows), g in frame.groupby(["transformer", "flows"], sort=True):
        recs = g.to_dict("records")
        n_cover, n_one = sum(covers(r) for r in recs), sum(collapsed(r) for r in recs)
        rows.append([common.DISPLAY.get(transformer, transformer), int(flows), common.cell(list(g["kl_nats"])),
                     *(common.cell(list(g[k])) for k in MODE_KEYS), common.cell(list(g["mass_near_0"])),
                     f"{n_cover}/{len(g)}", f"{n_one}/{len(g)}"])
        if transformer == "dsf":
            lines.append(f"- DSF ×{int(flows)}: ≥ 15 % mass on each of the 3 modes in {n_cover}/{len(g)} seeds → "
                         f"{'yes' if n_cover >= max(1, round(0.8 * len(g))) else 'no'} (≥ 4/5 asked)")
        else:
            lines.append(f"- {transformer} ×{int(flows)}: ≥ 90 % on one mode (0.6/1.2/1.8 or f < 0.1) in {n_one}/{len(g)} seeds")
    table = reports.markdown_table(["q", "flows", "KL(q‖p) nats", *(f"mass ±0.1 of {c}" for c in sw.MODES), "mass f < 0.1",
                                    "seeds covering all 3", "seeds on one mode"], rows)
    histogram_figure(frame, f"{out_dir}/naf_sinewave.png")
    return ("q's mass within ±0.1 of each posterior mode and KL(q‖p), exact by quadrature (mean ± s.e. over seeds); the "
            "true posterior (flat prior on (0, 2)) also has mass near f = 0, a boundary mode. Published: a figure only "
            "(sinewave_qf+kde.pdf), no numbers.\n\n" + table + "\nChecks of issue 30:\n\n" + "\n".join(lines)
            + "\n\n![q vs posterior](naf_sinewave.png)\n")


def histogram_figure(frame, path: str) -> None:
    shapes = sorted({(r.transformer, int(r.flows)) for r in frame.itertuples()})
    fig, axes = reports.figure(1, len(shapes), figsize=(4 * len(shapes), 3.2), squeeze=False)
    f = sw.f_grid(2001)
    dens = torch.exp(sw.log_likelihood(f) - sw.log_z()).numpy()
    edges = np.linspace(0, S["f_max"], SINE_HIST_BINS + 1)
    for ax, (transformer, flows) in zip(axes[0], shapes):
        g = frame[(frame["transformer"] == transformer) & (frame["flows"] == flows)].sort_values("seed")
        for i, row in enumerate(g.head(3).itertuples()):
            share = decode_grid(row.hist, 1).reshape(-1)
            ax.stairs(share / np.diff(edges), edges, alpha=0.6, label=f"q seed {int(row.seed)}", color=f"C{i}")
        ax.plot(f.numpy(), dens, "k-", lw=1, label="true posterior")
        ax.set_title(f"{common.DISPLAY.get(transformer, transformer)} ×{flows}", fontsize=9)
        ax.set_xlabel("f")
        ax.legend(fontsize=7)
    reports.save_figure(fig, path, dpi=110)


PIPELINE = Pipeline(
    name="naf-sinewave",
    description="NAF's sine-wave posterior: does a 1-D DSF q cover the three frequency modes an affine q collapses?",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=lambda settings, data_dir: NoData("naf-sinewave"),
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
