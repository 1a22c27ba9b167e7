"""BHN anomaly, error and adversary detection (B4 + B5; docs bayes.md §d.8), as Hendrycks & Gimpel and
dk_anomaly_detection.py.

Varies: model (map with L2, mcdropout, bhn mean-field / flow posteriors, ensemble), seed; each trained model is
evaluated on every (OOD set, score), on error detection (right vs wrong) and under the fast gradient sign attack per
ε: one result row each (``ood_set``, ``score``, ``eps``).
Fixed (B4): the 'Dan' net 784-256-256-256-C with GELU, Adam 1e-3, batch 128, best-valid checkpoint, MC samples of
the predictive (reference: 100); the training set without the held-out class (``exclude``, reference default 3: the
3s are the ``heldout`` OOD set). OOD sets: heldout, uniform U(0,1), Gaussian N(0,1), the embedded deformed digits
(``deformed``), inverted (1 − x) and pixel-permuted test images; paper adds Omniglot, notMNIST, CIFAR-10bw from
--data-dir. FGS (B5): the attack's gradient through the MC-averaged predictive (``fgs_attack_samples``), accuracy
and detection with ``fgs_eval_samples`` (20) samples.
Metrics (×100): ``auroc``, ``aupr_in`` (in-distribution positive), ``aupr_out`` (OOD positive); FGS rows
``adv_acc``, ``auroc`` (clean vs attacked), ``err_auroc``; every row the model's clean ``test_acc``, ``test_nll``,
``ece``.
Report: H&G's MNIST table [V] beside map / max prob, every model × score, the §d.8 checks, AUROC and FGS figures.
"""
from __future__ import annotations

import numpy as np

from core.bhn import adversarial, hparams, ood
from core.bhn import data as bdata
from pipelines.bhn import common
from pipelines.engine import reports
from pipelines.engine.spec import GensweepError, Grid, Pipeline, Setting, Stage
from tasks.bhn import load_images, ood_trainable

OOD_SETS = tuple(bdata.OOD_SETS) + tuple(bdata.PAPER_OOD_SETS)
SCORES = tuple(ood.SCORES)
ERRORS, FGS = "errors", "fgs"  # the ood_set of the error-detection and the adversarial rows
DETERMINISTIC_SCORES = ("max_prob", "entropy")  # map's: its MC samples are copies, BALD / mean std / var ratio are 0
DAN = hparams.B4_DAN  # dk_anomaly_detection.py's 'Dan' net and training [C]
HG = hparams.HG_MNIST_OOD
HG_KEYS = {ERRORS: "error_detection"}  # our ood_set name -> H&G's row

SETTINGS = {
    **common.model_settings(DAN["hidden"], DAN["activation"], ["map", "bhn"], ["realnvp"], [DAN["coupling"]], l2=DAN["map_l2"]),
    "seeds": Setting(1, "seeds per model", ge=1),
    "epochs": Setting(5, f"training epochs (dk_anomaly_detection: {DAN['epochs']}; H&G: 30)", ge=1),
    "lr": Setting(DAN["lr"], f"Adam learning rate (reference: {DAN['lr']:g})", gt=0),
    "batch": Setting(DAN["batch"], f"minibatch (reference: {DAN['batch']})", ge=1),
    "anneal": Setting(False, "anneal bhn's KL weight (reference anneal: 0)"),
    "valid_samples": Setting(20, "MC samples of the validation accuracy (best-valid checkpoint)", ge=1),
    "mc_samples": Setting(20, f"MC samples of the scores (reference: {DAN['mc_samples']})", ge=1),
    "exclude": Setting(DAN["exclude"], f"held-out class: trained without, its training-part images are the heldout OOD set "
                       f"(reference: {DAN['exclude']})", ge=0, le=9),
    "ood_sets": Setting(["heldout", "uniform", "gaussian"], "OOD sets (paper's omniglot, notmnist, cifar10bw need --data-dir)",
                        choices=OOD_SETS),
    "scores": Setting(["max_prob", "entropy", "bald", "mean_std"], "uncertainty scores (max_prob = H&G's baseline)", choices=SCORES),
    "errors": Setting(True, "error detection rows (right vs wrong test predictions)"),
    "fgs": Setting(True, "fast gradient sign rows (accuracy and detection per ε)"),
    "fgs_eps": Setting([0.05, 0.1, 0.2], "FGS ε (list; FGS_eval.py's grid has 20, 0.001-0.5)", gt=0, item=float),
    "fgs_images": Setting(200, "test images attacked", ge=10),
    "fgs_attack_samples": Setting(10, "MC samples the attack's gradient averages over (FGS_eval avg)", ge=1),
    "fgs_eval_samples": Setting(20, "MC samples of the attacked accuracy and scores (FGS_eval n_mc: 20)", ge=1),
    **common.split_settings(7000, 1000, 2000),
}
CPU_SETS = ["heldout", "uniform", "gaussian", "deformed", "inverted", "permuted"]
PRESETS = {
    "smoke": {},
    "cpu": dict(models=["map", "mcdropout", "bhn"], posteriors=["mean-field", "realnvp"], seeds=3, epochs=30, mc_samples=DAN["mc_samples"],
                ood_sets=CPU_SETS, fgs_eps=[0.01, 0.05, 0.1, 0.2, 0.3], fgs_images=1000),
    "paper": dict(models=["map", "mcdropout", "bhn", "ensemble"], posteriors=["mean-field", "realnvp"], seeds=3, epochs=DAN["epochs"],
                  mc_samples=DAN["mc_samples"], ood_sets=CPU_SETS + list(bdata.PAPER_OOD_SETS), fgs_eps=list(adversarial.EPSILONS),
                  fgs_images=1000, scores=list(SCORES), n_train=50_000, n_valid=10_000, n_test=10_000),
}
PRESET_HELP = {
    "smoke": "MNIST test split (--data-dir) or embedded digits 7k/1k/2k without 3s, {map, bhn realnvp x4}, 5 epochs, 1 seed, "
             "20 MC samples, OOD {heldout 3, uniform, gaussian}, FGS on 200 images at 3 ε: runs, no claim",
    "cpu": "MNIST test split 7k/1k/2k without 3s, {map, mcdropout, bhn mean-field, bhn realnvp x4}, 30 epochs (H&G's; "
           "reference 100), 3 seeds, 100 MC samples, 6 OOD sets, FGS on 1,000 images at 5 ε",
    "paper": "MNIST 50k/10k/10k (--data-dir) + Omniglot / notMNIST / CIFAR-10bw, + ensemble-5, 100 epochs, the reference's "
             "20 ε, all five scores",
}
TRAIN_KEYS = ("epochs", "lr", "batch", "anneal", "valid_samples", "mc_samples", "exclude", "fgs_images", "fgs_attack_samples",
              "fgs_eval_samples", "n_train", "n_valid", "n_test", "split_seed")


def check(settings: dict) -> None:
    common.check_variants(settings)
    if settings["fgs"] and settings["fgs_images"] > settings["n_test"]:
        raise GensweepError(f"bad value for fgs_images: {settings['fgs_images']} (more than the test images, n_test {settings['n_test']})")


def entries(settings: dict, model: str) -> list[dict]:
    """The evaluations of one trained model (its block): every (OOD set, score), errors, FGS per (ε, score)."""
    scores = [s for s in settings["scores"] if model not in common.DETERMINISTIC or s in DETERMINISTIC_SCORES]
    out = [{"ood_set": o, "score": s} for o in settings["ood_sets"] for s in scores]
    if settings["errors"]:
        out += [{"ood_set": ERRORS, "score": s} for s in scores]
    if settings["fgs"]:
        out += [{"ood_set": FGS, "eps": float(e), "score": s} for e in settings["fgs_eps"] for s in scores if s in adversarial.FGS_SCORES]
    return out


def configs(settings: dict) -> list[dict]:
    shared = dict(common.model_keys(settings), **{k: settings[k] for k in TRAIN_KEYS})
    return [dict(shared, **variant, seed=seed, block=entries(settings, variant["model"]))
            for variant in common.variants(settings) for seed in range(settings["seeds"])]


def stages(settings: dict) -> list[Stage]:
    label = lambda c: f"{common.variant_label(c)} seed={c['seed']} {c.get('ood_set', '')}/{c.get('score', '')}"
    return [Stage("models", ood_trainable, Grid(configs(settings)), metric="auroc", mode="max", label=label)]


def load_data(settings: dict, data_dir: str | None):
    extra = tuple(s for s in settings["ood_sets"] if s in bdata.PAPER_OOD_SETS)
    return load_images(settings, data_dir, extra)


# ------------------------------------------------------------------------------------------- report


def published(ood_set: str) -> dict | None:
    """H&G's MNIST max-softmax row for an OOD set (core.bhn.hparams.HG_MNIST_OOD, tag [V]), None when they have none."""
    row = HG["rows"].get(HG_KEYS.get(ood_set, ood_set))
    return dict(row, tag="V") if row else None


def labelled(frame):
    return frame.assign(variant=[common.variant_label(r) for r in frame.to_dict("records")])


def ordered_variants(frame) -> list[str]:
    return sorted(set(frame["variant"]), key=common.variant_order)


def set_order(frame) -> list[str]:
    known = [*OOD_SETS, ERRORS]
    return [s for s in known if s in set(frame["ood_set"])]


def hg_table(frame) -> str:
    """H&G's layout: per OOD set map / max prob's AUROC, AUPR-in, AUPR-out beside their [V] numbers."""
    rows = []
    base = frame[(frame["variant"] == "map") & (frame["score"] == "max_prob")]
    for o in set_order(frame):
        g = base[base["ood_set"] == o]
        pub = published(o)
        ours = [common.cell(list(g[m]), 2) if len(g) else "–" for m in ("auroc", "aupr_in", "aupr_out")]
        theirs = [f"{pub[m]:.2f}" for m in ("auroc", "aupr_in", "aupr_out")] if pub else ["–"] * 3
        rows.append([o, *ours, *theirs, f"[{pub['tag']}]" if pub else "–"])
    return reports.markdown_table(["OOD set (vs test)", "map max prob AUROC", "AUPR-in", "AUPR-out", "H&G AUROC", "H&G AUPR-in",
                                   "H&G AUPR-out", "tag"], rows)


def score_table(frame) -> str:
    """AUROC per (OOD set, model), one column per score; the BHN paper's column "published: not entered"."""
    scores = [s for s in SCORES if s in set(frame["score"])]
    rows = []
    for o in set_order(frame):
        for v in ordered_variants(frame):
            g = frame[(frame["ood_set"] == o) & (frame["variant"] == v)]
            if g.empty:
                continue
            cells = [common.cell(list(g[g["score"] == s]["auroc"]), 1) if (g["score"] == s).any() else "–" for s in scores]
            rows.append([o, v, *cells, common.NOT_ENTERED if v.startswith("bhn") else ""])
    return reports.markdown_table(["OOD set", "model", *[f"AUROC {s}" for s in scores], "BHN paper [–]"], rows)


def accuracy_table(frame) -> str:
    rows = []
    for v in ordered_variants(frame):
        per_model = frame[frame["variant"] == v].drop_duplicates("seed")
        rows.append([v, common.cell(list(100 * per_model["test_acc"]), 2), common.cell(list(per_model["test_nll"]), 3),
                     common.cell(list(per_model["ece"]), 3), len(per_model)])
    return reports.markdown_table(["model", "test accuracy (%)", "test NLL", "ECE", "seeds"], rows)


def checks(frame) -> list[str]:
    """§d.8's done-when: map / max prob within 5 AUROC points of H&G on uniform and gaussian; the best bhn score at or
    above map / max prob on >= 3 OOD sets (means over seeds); bhn's FGS accuracy at ε = 0.1 against mcdropout's."""
    lines = []
    base = frame[(frame["variant"] == "map") & (frame["score"] == "max_prob")]
    for o in ("uniform", "gaussian"):
        g, pub = base[base["ood_set"] == o], published(o)
        if len(g) and pub:
            ours = float(g["auroc"].mean())
            lines.append(f"- map / max prob vs {o}: AUROC {ours:.2f} vs H&G {pub['auroc']:.2f} [{pub['tag']}]: "
                         f"{abs(ours - pub['auroc']):.2f} points → {'yes' if abs(ours - pub['auroc']) <= 5 else 'no'}")
    sets = [o for o in set_order(frame) if o in OOD_SETS]
    for v in [v for v in ordered_variants(frame) if v.startswith("bhn")]:
        wins = []
        for o in sets:
            mine = frame[(frame["variant"] == v) & (frame["ood_set"] == o)].groupby("score")["auroc"].mean()
            ref = base[base["ood_set"] == o]["auroc"]
            if len(mine) and len(ref):
                wins.append((o, mine.idxmax(), float(mine.max()), float(ref.mean())))
        count = sum(a >= b for _, _, a, b in wins)
        lines.append(f"- {v}: best score ≥ map / max prob on {count} of {len(wins)} OOD sets ("
                     + ", ".join(f"{o}: {s} {a:.1f} vs {b:.1f}" for o, s, a, b in wins) + f") → {'yes' if count >= 3 else 'no'}")
    fgs = frame[(frame["ood_set"] == FGS)]
    if len(fgs) and (fgs["eps"] - 0.1).abs().min() < 1e-9:
        at = fgs[(fgs["eps"] - 0.1).abs() < 1e-9].drop_duplicates(["variant", "seed"]).groupby("variant")["adv_acc"].mean()
        if "mcdropout" in at:
            for v in [v for v in at.index if v.startswith("bhn")]:
                lines.append(f"- {v}: FGS accuracy at ε = 0.1 {100 * at[v]:.1f} % vs mcdropout {100 * at['mcdropout']:.1f} % → "
                             f"{'at or above' if at[v] >= at['mcdropout'] else 'below'} (the abstract's claim: at or above)")
    return lines


def auroc_figure(frame, path: str) -> None:
    """Best-score AUROC per OOD set and model (bars, mean over seeds), H&G's max-prob AUROC as a marker."""
    sets, variants = set_order(frame), ordered_variants(frame)
    fig, ax = reports.figure(figsize=(1.6 * len(sets) + 3, 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        best = [frame[(frame["variant"] == v) & (frame["ood_set"] == o)].groupby("score")["auroc"].mean().max() for o in sets]
        ax.bar(np.arange(len(sets)) + (i - (len(variants) - 1) / 2) * width, np.nan_to_num(best), width, label=f"{v} (best score)")
    marked = [(j, published(o)["auroc"]) for j, o in enumerate(sets) if published(o)]
    if marked:
        ax.plot(*zip(*marked), "k*", ms=10, ls="", label="H&G, map max prob [V]")
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylabel("AUROC (×100)")
    ax.set_ylim(40, 101)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("OOD / error detection: best score per model (mean over seeds)")
    reports.save_figure(fig, path)


def fgs_figure(frame, path: str) -> None:
    """FGS: accuracy and clean-vs-attacked AUROC (best score) against ε, one line per model."""
    fgs = frame[frame["ood_set"] == FGS]
    fig, axes = reports.figure(1, 2, figsize=(10, 3.8), squeeze=False)
    for v in ordered_variants(fgs):
        g = fgs[fgs["variant"] == v]
        acc = g.drop_duplicates(["seed", "eps"]).groupby("eps")["adv_acc"].mean()
        det = g.groupby(["eps", "score"])["auroc"].mean().groupby("eps").max()
        axes[0][0].plot(acc.index, 100 * acc.values, marker="o", label=v)
        axes[0][1].plot(det.index, det.values, marker="o", label=v)
    for ax, name in zip(axes[0], ("accuracy under FGS (%)", "clean vs attacked AUROC (best score)")):
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("fast gradient sign on the MC-averaged predictive (mean over seeds)")
    reports.save_figure(fig, path)


def report(frame, curves, out_dir: str) -> str:
    frame = labelled(frame)
    detect = frame[frame["ood_set"] != FGS]
    text = ("In-distribution test set (without the held-out class) vs each OOD set; AUROC / AUPR ×100, the in-distribution "
            "set positive for AUROC and AUPR-in, the OOD set positive (score negated) for AUPR-out; errors: right (in) vs "
            "wrong (out) test predictions. Mean ± s.e. over seeds. H&G's numbers [V] are a 3 × 256 GELU MLP trained on "
            "MNIST's 60k images (train + validation) for 30 epochs: ours train on the smaller split of the preset, so "
            "their numbers are an anchor, not a target. The BHN paper's tables: published: not entered [–].\n\n"
            "Clean test metrics per model:\n\n" + accuracy_table(frame)
            + "\nAs Hendrycks & Gimpel's MNIST table (map, max prob):\n\n" + hg_table(detect)
            + "\nAUROC per model and score:\n\n" + score_table(detect)
            + "\nChecks of bayes.md §d.8:\n\n" + "\n".join(checks(frame)) + "\n")
    if len(detect):
        auroc_figure(detect, f"{out_dir}/bhn_ood_auroc.png")
        text += "\n![AUROC per OOD set](bhn_ood_auroc.png)\n"
    if (frame["ood_set"] == FGS).any():
        fgs_figure(frame, f"{out_dir}/bhn_ood_fgs.png")
        text += "\n![FGS accuracy and detection](bhn_ood_fgs.png)\n"
    return text


PIPELINE = Pipeline(
    name="bhn-ood",
    description="BHN B4 + B5: OOD, error and FGS-adversary detection (AUROC / AUPR) of map, MC dropout and BHNs, H&G beside",
    settings=SETTINGS,
    presets=PRESETS,
    preset_help=PRESET_HELP,
    load_data=load_data,
    stages=stages,
    report=report,
    check=check,
    run_defaults={"gpus_per_trial": 0.0},
)
