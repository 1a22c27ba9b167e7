"""NAF §6.1 (docs bayes.md §d.1): toy energy fitting (N1) and toy density estimation (N2), DSF vs affine flows.

Varies: target (energies U1..U9 of torchkit toy_energy.py, fitted by reverse KL with q an IAF; densities mog4,
grid10, swissroll, fitted by maximum likelihood on fresh samples with a MAF-direction flow), transformer, seed.
Fixed: N1's model_iaf_toy.py shape for energies (one flow, MADE 64 × 3 hidden layers, DSF d = 5 × 2 blocks, Adam
5e-4, batch 64, 10,000 steps); N2's naf_examples shape for densities (2 flows, MADE 64 × 2, DSF d = 16, Adam 5e-3,
batch 64, 2,000 steps). Affine rows use the same MADE and depth; ``deep_affine`` adds N1's commented comparator
(3 affine flows, MADE 128 × 2) for the energies. ``energy_order``: the energy flows' MADE input order, natural (the
recorded runs) or random per seed as N1's IAF_DSF (torchkit ``fixed_order=False``; seeds grouped into blocks by
their order; for the 3-flow comparator one draw serves all three flows, the reference draws one per flow).
Metrics: ``kl_nats`` = reverse KL(q‖p) with log Z by quadrature (energies), forward KL E_p[log p − log q] on fresh
samples (mog4, grid10); ``test_nll_nats`` (densities; swissroll has no exact density, so only this).
Report: target × flow table (mean ± s.e. over seeds), the issue's checks, heat maps (truth vs each flow).
"""
from __future__ import annotations

import numpy as np

from core.flows import energies
from core.naf import data as ndata
from core.naf import hparams
from core.naf.metrics import MODES, decode_grid, mode_coverage, toy_box, truth_grid
from pipelines.engine import reports
from pipelines.engine.spec import Grid, NoData, Pipeline, Setting, Stage
from pipelines.naf import common
from tasks.naf import toy_trainable

ENERGY_TARGETS = tuple(energies.ENERGIES)
TARGETS = (*ENERGY_TARGETS, *ndata.TOY_DENSITIES)
E, D = hparams.TOY_ENERGY, hparams.TOY_DENSITY
ORDERS = ("natural", "random")

SETTINGS = {
    "targets": Setting(["U1", "U4", "mog4", "swissroll"], "energies (U1..U9) and densities (mog4, grid10, swissroll)", choices=TARGETS),
    "transformers": common.transformers_setting(["affine-gated", "dsf"]),
    "seeds": Setting(2, "seeds per (target, transformer)", ge=1),
    "block_size": Setting(5, "seeds trained together in one trial (one stacked flow block)", ge=1),
    "energy_steps": Setting(1000, f"Adam steps on an energy (N1: {E['steps']:,})", ge=1),
    "density_steps": Setting(1000, f"Adam steps on a density (N2: {D['steps']:,})", ge=1),
    "energy_flows": Setting(E["flows"], "flows of the energy model (N1: one IAF_DSF)", ge=1),
    "energy_hidden": Setting(E["hidden"], "MADE width of the energy model", ge=2),
    "energy_hidden_layers": Setting(E["hidden_layers"], "MADE hidden layers of the energy model (N1: num_layers 4)", ge=1),
    "energy_ds_dim": Setting(E["ds_dim"], "DSF/DDSF units of the energy model", ge=1),
    "energy_ds_layers": Setting(E["ds_layers"], "DSF/DDSF blocks of the energy model", ge=1),
    "energy_lr": Setting(E["lr"], "Adam learning rate on energies", gt=0),
    "density_flows": Setting(D["flows"], "flows of the density model (naf_examples: 2)", ge=1),
    "density_hidden": Setting(D["hidden"], "MADE width of the density model", ge=2),
    "density_hidden_layers": Setting(D["hidden_layers"], "MADE hidden layers of the density model", ge=1),
    "density_ds_dim": Setting(D["ds_dim"], "DSF/DDSF units of the density model", ge=1),
    "density_ds_layers": Setting(D["ds_layers"], "DSF/DDSF blocks of the density model", ge=1),
    "density_lr": Setting(D["lr"], "Adam learning rate on densities", gt=0),
    "batch": Setting(E["batch"], "samples per step (N1, N2: 64)", ge=1),
    "energy_clip": Setting(E["clip"], "gradient-norm clip on energies (0: none, as model_iaf_toy.py)", ge=0),
    "density_clip": Setting(5.0, "gradient-norm clip on densities (0: none)", ge=0),
    "faithful": Setting(True, "N1's exact form (context ones, no flip, no final LinearFlow) and N2's N(0, e I) base"),
    "deep_affine": Setting(False, "add N1's affine comparator (3 affine-gated flows, MADE 128 x 2) on the energies"),
    "energy_order": Setting("natural", "MADE input order of the energy flows: natural ((0, 1) for every seed, the recorded runs) or "
                            "random (N1's IAF_DSF, fixed_order=False: each seed draws its own, (0, 1) or (1, 0))",
                            choices=ORDERS, opt_in=True),
    "eval_samples": Setting(100_000, "fresh samples for the final KL / NLL", ge=1000),
    "eval_every": Setting(500, "steps between progress reports", ge=1),
}
CPU_TARGETS = ["U1", "U2", "U3", "U4", "mog4", "grid10", "swissroll"]
PRESETS = {
    "smoke": {},
    "cpu": dict(targets=CPU_TARGETS, transformers=["maf", "affine-gated", "dsf", "ddsf"], seeds=3,
                energy_steps=E["steps"], density_steps=D["steps"], deep_affine=True),
    "paper": dict(targets=[*CPU_TARGETS[:4], "U5", "U6", "U7", "U8", *CPU_TARGETS[4:]], transformers=["maf", "affine-gated", "dsf", "ddsf"],
                  seeds=5, energy_steps=E["steps"], density_steps=D["steps"], deep_affine=True),
}
PRESET_HELP = {
    "smoke": "U1, U4, mog4, swissroll x {affine-gated, dsf} x 2 seeds, 1,000 steps (not 10,000 / 2,000): runs, no claim",
    "cpu": "U1-U4 + mog4, grid10, swissroll x 4 transformers (+ N1's deep affine) x 3 seeds at the reference steps",
    "paper": "cpu + U5-U8, 5 seeds (fourdiamond, 8gaussians, 2spirals, checkerboard not implemented)",
}


def shapes(settings: dict, task: str) -> list[dict]:
    """The flow shapes of one task: one per transformer (+ N1's deep affine for energies)."""
    p = "energy_" if task == "energy" else "density_"
    base = dict(flows=settings[p + "flows"], hidden=settings[p + "hidden"], hidden_layers=settings[p + "hidden_layers"],
                ds_dim=settings[p + "ds_dim"], ds_layers=settings[p + "ds_layers"], lr=settings[p + "lr"], steps=settings[p + "steps"])
    base["clip"] = settings[p + "clip"]
    if settings["faithful"]:
        base.update({k: E[k] for k in ("flip", "final_linear", "context")} if task == "energy" else {"base_log_var": D["base_log_var"]})
    out = [dict(base, transformer=t) for t in settings["transformers"]]
    if task == "energy" and settings["deep_affine"]:
        out.append(dict(base, transformer="affine-gated", **hparams.TOY_ENERGY_AFFINE_DEEP, hidden_layers=2, flip=True))  # "with flips"
    return out


def configs(settings: dict) -> list[dict]:
    blocks = []
    for target in settings["targets"]:
        task = "energy" if target in ENERGY_TARGETS else "density"
        for shape in shapes(settings, task):
            shared = dict(shape, task=task, target=target, batch=settings["batch"], eval_samples=settings["eval_samples"],
                          eval_every=settings["eval_every"])
            if task == "energy" and settings["energy_order"] == "random":
                blocks += random_order_blocks(shared, settings["seeds"], settings["block_size"])
            else:
                blocks += common.block_configs([shared], settings["seeds"], settings["block_size"])
    return blocks


def random_order_blocks(shared: dict, seeds: int, block_size: int) -> list[dict]:
    """N1's random MADE order (torchkit IAF_DSF, fixed_order=False): seed s gets core.flows.made.random_order(2, s);
    a block shares its FlowSpec, so the seeds are grouped by their drawn order (``order`` in the config), then chunked."""
    from core.flows.made import random_order

    by_order: dict[tuple[int, ...], list[int]] = {}
    for s in range(seeds):
        by_order.setdefault(random_order(2, s), []).append(s)
    return [dict(shared, order=list(order), block=[{"seed": s} for s in group[i:i + block_size]])
            for order, group in sorted(by_order.items()) for i in range(0, len(group), block_size)]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{c['target']} {c['transformer']} x{c['flows']} seed={c['seed']}"
    return [Stage("fits", toy_trainable, Grid(configs(settings)), metric="kl_nats", mode="min", label=label)]


# ------------------------------------------------------------------------------------------- report


def groups(frame):
    """(target, transformer, flows, hidden) groups in the targets' and transformers' declared order."""
    order = {t: i for i, t in enumerate(TARGETS)}
    torder = {t: i for i, t in enumerate(common.DISPLAY)}
    keys = sorted({(r.target, r.transformer, int(r.flows), int(r.hidden)) for r in frame.itertuples()},
                  key=lambda k: (order.get(k[0], 99), torder.get(k[1], 9), k[2], k[3]))
    for key in keys:
        g = frame[(frame["target"] == key[0]) & (frame["transformer"] == key[1]) & (frame["flows"] == key[2]) & (frame["hidden"] == key[3])]
        yield key, g


def checks(frame) -> list[str]:
    """The issue's done-when checks, each a line: DSF vs the same-size affine (both forms) per target; DSF KL <= 0.05."""
    lines = []
    for target in [t for t in TARGETS if t in set(frame["target"]) and t != "swissroll"]:
        rows = frame[frame["target"] == target]
        dsf = rows[rows["transformer"] == "dsf"]
        if dsf.empty:
            continue
        flows, hidden = int(dsf["flows"].iloc[0]), int(dsf["hidden"].iloc[0])
        same = rows[(rows["flows"] == flows) & (rows["hidden"] == hidden) & rows["transformer"].isin(["maf", "affine-gated"])]
        for affine, g in same.groupby("transformer"):
            gap = float(g["kl_nats"].mean() - dsf["kl_nats"].mean())
            apart = float(dsf["kl_nats"].max()) < float(g["kl_nats"].min())
            ok = gap >= 0.1 and apart
            lines.append(f"- {target}: DSF KL {dsf['kl_nats'].mean():.3f} vs {affine} {g['kl_nats'].mean():.3f}: lower by {gap:.3f} nats, "
                         f"seed ranges {'apart' if apart else 'overlap'} → {'yes' if ok else 'no'}")
        if target in ("U1", "U4"):
            mean, worst = float(dsf["kl_nats"].mean()), float(dsf["kl_nats"].max())
            lines.append(f"- {target}: DSF reverse KL ≤ 0.05: mean {mean:.3f} → {'yes' if mean <= 0.05 else 'no'}; "
                         f"every seed (max {worst:.3f}) → {'yes' if worst <= 0.05 else 'no'}")
    return lines


def heatmaps(frame, path: str) -> None:
    """One row per target: the truth, then each flow shape's first seed."""
    targets = [t for t in TARGETS if t in set(frame["target"])]
    per_target = {t: [(k, g) for k, g in groups(frame) if k[0] == t] for t in targets}
    cols = 1 + max(len(v) for v in per_target.values())
    fig, axes = reports.figure(len(targets), cols, figsize=(2.2 * cols, 2.2 * len(targets)), squeeze=False)
    for i, target in enumerate(targets):
        box = toy_box(target)
        extent = (-box, box, -box, box)
        axes[i][0].imshow(truth_grid(target), origin="lower", extent=extent, cmap="viridis")
        axes[i][0].set_title(f"{target}: target", fontsize=8)
        for j, (key, g) in enumerate(per_target[target], start=1):
            first = g.sort_values("seed").iloc[0]
            axes[i][j].imshow(decode_grid(first["heat"]), origin="lower", extent=extent, cmap="viridis")
            kl = first["kl_nats"] if np.isfinite(first["kl_nats"]) else first.get("test_nll_nats", float("nan"))
            name = "KL" if np.isfinite(first["kl_nats"]) else "NLL"
            axes[i][j].set_title(f"{key[1]} ×{key[2]}/{key[3]}\n{name} {kl:.2f}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("q vs target (seed 0); energies: samples of q, densities: q's density", fontsize=9)
    reports.save_figure(fig, path, dpi=110)


def report(frame, curves, out_dir: str) -> str:
    rows = []
    truths = {}
    for (target, transformer, flows, hidden), g in groups(frame):
        kind = "reverse KL" if target in ENERGY_TARGETS else ("forward KL" if target in ndata.EXACT_DENSITIES else "–")
        nll = common.cell(list(g["test_nll_nats"])) if "test_nll_nats" in g and g["test_nll_nats"].notna().any() else "–"
        coverage = "–"
        if target in MODES:
            truth = truths.setdefault(target, truth_grid(target))
            coverage = common.cell([mode_coverage(target, decode_grid(h), truth) for h in g["heat"]], 2)
        rows.append([target, common.DISPLAY.get(transformer, transformer), flows, hidden, kind, common.cell(list(g["kl_nats"])), nll,
                     coverage, len(g), f"{g['wall_s'].mean():.0f}"])
    table = reports.markdown_table(["target", "transformer", "flows", "hidden", "KL", "KL (nats)", "test NLL (nats)",
                                    "modes covered", "seeds", "block wall (s)"], rows)
    heatmaps(frame, f"{out_dir}/naf_toy_heatmaps.png")
    check = "\n".join(checks(frame))
    return ("Reverse KL(q‖p) = E_q[log q − U] + log Z (log Z by quadrature on 1,000² points) for the energies; forward KL "
            "E_p[log p − log q] on 10⁵ fresh samples for mog4 / grid10; swissroll has no exact density (test NLL only). "
            "Modes covered: share of the modes (mog4, grid10, U4) where q holds ≥ half the true mass near the mode (heat-map "
            "cells; energies: from 10⁵ samples of q). Mean ± s.e. over seeds. Published: heat-map figures only (NAF §6.1, naf_examples), no numbers.\n\n"
            + table + "\nChecks of issue 30 (DSF vs same-size affine, ≥ 0.1 nats lower with seed ranges apart):\n\n" + check
            + "\n\n![heat maps](naf_toy_heatmaps.png)\n")


PIPELINE = Pipeline(
    name="naf-toy",
    description="NAF §6.1: DSF vs affine flows on toy energies (reverse KL) and 2-D densities (forward KL), exact metrics",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=lambda settings, data_dir: NoData("naf-toy"),
    stages=stages,
    report=report,
    run_defaults={"gpus_per_trial": 0.0},
)
