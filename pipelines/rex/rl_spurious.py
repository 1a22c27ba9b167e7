"""RL with partial observability and spurious features (thesis §5.4): SAC with an ERM / IRM / REx reward model.

Varies: task (DeepMind Control, state observations), method of the reward
model's penalty across the two training domains (core.methods), seed.
Each domain appends a spurious copy of the noise-free last state entry times
its factor (training domains 1 and 2, test domain 3) while the real entry gets
N(0, 1) * noise: in training the copy predicts better, at test it is off.
``hide`` drops state entries (partial observability, e.g. ``velocity``).
Stage "tune" (optional): an Optuna study per penalized method over the penalty
weight and the anneal step on the tuning task, paired draws, with ASHA
stopping runs early on the training-domain return. Stage "runs": tasks x
methods x seeds; when the tune stage ran, it is built from the tune stage's
rows and each penalized method trains with its best tuned (penalty weight,
anneal step) (best training-domain return among the runs ASHA let finish, as
the thesis tuned on cartpole swingup and ran finger spin and walker walk with
the tuned values); otherwise, and for ERM, with the settings' values. Every
runs row records where its values came from (``hparams_from``).
Reports: learning curves (training vs test domain, one line per method,
shaded over seeds), a final-return table and the values each method ran with.

The RL packages (the ``rl`` extra) are imported only when a trial starts, so
the pipeline is listed, checked and reported without them.
"""
from __future__ import annotations

import pandas as pd

from core import methods
from core.rl.hparams import AGENT, DOMAINS, RUNS
from core.rl.layouts import LAYOUTS, kept_entries, parse_hide
from pipelines.engine import reports
from pipelines.engine.followup import best_rows
from pipelines.engine.spec import GensweepError, Grid, NoData, Pipeline, Search, Setting, Stage

TASKS = tuple(LAYOUTS)  # the tasks whose observation layout core.rl.layouts knows
METHODS = ("erm", "irm", "vrex", "mmrex")
STAGES = ("tune", "runs")


def paper(key: str) -> str:
    """``REx code: <value>`` of an AGENT entry, for a setting's help."""
    return f"REx code: {AGENT[key]:g}"


SETTINGS = {
    "stages": Setting(["runs"], "stages to run: tune (Optuna + ASHA on the tuning task) and/or runs", choices=STAGES),
    "tasks": Setting(["cartpole-swingup"], "DeepMind Control tasks of stage runs", choices=TASKS),
    "methods": Setting(list(METHODS), "reward-model methods (core.methods)", choices=tuple(m for m in methods.METHODS if m != "grayscale")),
    "seeds": Setting(1, "seeds per (task, method)", ge=1),
    "total_steps": Setting(1500, "env steps per training domain (lock-steps)", ge=1),
    "eval_every": Setting(500, "steps between evaluations", ge=1),
    "eval_episodes": Setting(2, "deterministic episodes per evaluation and domain", ge=1),
    "episode_steps": Setting(100, f"agent steps per episode ({RUNS['episode_steps']} in the paper; 0: the task's default)", ge=0),
    "random_steps": Setting(500, f"uniform random steps before the policy acts ({paper('random_steps')})", ge=0),
    "batch_size": Setting(64, f"sequences per training domain and update ({paper('batch_size')})", ge=1),
    "critic_seq": Setting(AGENT["critic_seq"], f"transitions of each sampled sequence the critic and actor train on (REx code: "
                          f"all {AGENT['critic_seq']})", ge=1),
    "updates_per_step": Setting(AGENT["updates_per_step"], "updates per lock-step; 0: one per training domain (REx code's loop)", ge=0),
    "buffer_capacity": Setting(AGENT["buffer_capacity"], "replay capacity in all, split across the training domains (REx code)", ge=1),
    "seeding": Setting(AGENT["seeding"], "shared: every env and the warm-up actions from the run's seed (REx code); per_domain",
                       choices=("shared", "per_domain")),
    "hidden": Setting(AGENT["hidden"], f"actor and critic: two hidden layers of this width ({paper('hidden')})", ge=1),
    "encoder_hidden": Setting(AGENT["encoder_hidden"], f"state encoder: two hidden layers of this width ({paper('encoder_hidden')})", ge=1),
    "actor_lr": Setting(AGENT["actor_lr"], f"actor learning rate ({paper('actor_lr')})", gt=0),
    "critic_lr": Setting(AGENT["critic_lr"], f"critic and encoder learning rate ({paper('critic_lr')})", gt=0),
    "alpha_lr": Setting(AGENT["alpha_lr"], f"temperature learning rate ({paper('alpha_lr')})", gt=0),
    "model_lr": Setting(AGENT["model_lr"], f"reward model (dynamics, reward head, encoder) learning rate ({paper('model_lr')}); 0: frozen", ge=0),
    "encoder_l1": Setting(AGENT["encoder_l1"], f"weight of the encoder weights' L1 norm in the critic loss ({paper('encoder_l1')})", ge=0),
    "penalty_weight": Setting(AGENT["penalty_weight"], f"reward-model penalty weight after the anneal step ({paper('penalty_weight')})", ge=0),
    "anneal_iters": Setting(750, f"steps at penalty weight 1 before the weight applies ({paper('anneal_iters')})", ge=0),
    "noise": Setting(DOMAINS["noise"], "std of the Gaussian noise on the real copied entries", ge=0),
    "k": Setting(DOMAINS["k"], "state entries copied as the spurious feature; 0: none (plain task, no noise)", ge=0),
    "train_factors": Setting(list(DOMAINS["train_factors"]), "spurious factors of the training domains"),
    "test_factor": Setting(DOMAINS["test_factor"], "spurious factor of the test domain"),
    "hide": Setting("", "state entries hidden from the agent, comma-separated (e.g. velocity); empty: none"),
    "tune_task": Setting(RUNS["tune_task"], "stage tune: the task hyperparameters are tuned on", choices=TASKS),
    "tune_samples": Setting(2, "stage tune: configurations per penalized method", ge=1),
    "tune_max_penalty": Setting(1e4, "stage tune: the penalty weight is drawn log-uniformly from [1, this]", gt=1),
}
# The CPU presets' networks and batch: the paper's 2 x 1024 networks at 256 sequences (768 transitions) per update
# run ~1-2 updates/s on 2 CPU cores, so 60k steps would take many hours; these are the deviations, all else as the REx code.
CPU_SAC = dict(hidden=256, encoder_hidden=256, batch_size=128, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4)
FULL_EPISODES = dict(episode_steps=RUNS["episode_steps"], random_steps=AGENT["random_steps"], eval_episodes=RUNS["eval_episodes"])
PRESETS = {
    "smoke": {},
    "paper": dict(
        stages=["tune", "runs"], tasks=list(RUNS["tasks"]), seeds=RUNS["seeds"], total_steps=RUNS["total_steps"],
        eval_every=RUNS["eval_every"], batch_size=AGENT["batch_size"], penalty_weight=AGENT["penalty_weight"],
        anneal_iters=AGENT["anneal_iters"], tune_samples=RUNS["tune_samples"], **FULL_EPISODES,
    ),
    # SAC seen learning: plain SAC (no spurious feature, one plain domain, ERM, the reward model frozen, no encoder L1:
    # the probe), cartpole swingup, 2 seeds x 60k steps, CPU networks, batch 256 transitions.
    "learn": dict(
        tasks=["cartpole-swingup"], methods=["erm"], seeds=2, total_steps=60_000, eval_every=5_000, k=0, train_factors=[1.0],
        test_factor=1.0, **FULL_EPISODES, **{**CPU_SAC, "batch_size": 256}, critic_seq=1, model_lr=0.0, encoder_l1=0.0,
    ),
    # The study at CPU scale: 4 methods x 2 seeds on cartpole swingup with the spurious feature, CPU networks.
    # 2 updates per lock-step, each on 64 sequences x 3 steps x 2 domains = 384 transitions (paper: 256 x 3 x 2 = 1,536).
    "study": dict(
        tasks=["cartpole-swingup"], seeds=2, total_steps=20_000, eval_every=5_000, penalty_weight=AGENT["penalty_weight"],
        anneal_iters=AGENT["anneal_iters"],
        **FULL_EPISODES, **{**CPU_SAC, "batch_size": 64},
    ),
}
PRESET_HELP = {
    "smoke": "plumbing only: 1,500 steps of 100-step episodes, nothing is learned",
    "paper": f"the thesis's runs: tune on {RUNS['tune_task'].replace('-', ' ')}, then "
             f"{' and '.join(task.replace('-', ' ') for task in RUNS['tasks'])}, 2 x {AGENT['hidden']} networks, "
             f"{RUNS['total_steps']:,} steps",
    "learn": f"plain SAC seen learning: no spurious feature, one plain domain, ERM, reward model frozen (REx code: trained "
             f"at {AGENT['model_lr']:g}), no encoder L1 ({AGENT['encoder_l1']:g}); CPU networks 2 x 256 (paper 2 x {AGENT['hidden']}), "
             f"encoder 256 ({AGENT['encoder_hidden']}), lr 3e-4 ({AGENT['actor_lr']:g}), batch 256 transitions, the first of each "
             f"sampled sequence (REx code: {AGENT['batch_size']} sequences x {AGENT['critic_seq']})",
    "study": f"4 methods x 2 seeds with the spurious feature at CPU scale: networks 2 x 256 (paper 2 x {AGENT['hidden']}), "
             f"encoder 256 ({AGENT['encoder_hidden']}), lr 3e-4 ({AGENT['actor_lr']:g}), batch 64 sequences per domain "
             f"({AGENT['batch_size']}), 20k steps ({RUNS['total_steps']:,})",
}
# What the report calls each method in the RL study: the REx RL code's "rex" penalty is |R1 - R2| (agent/sac.py), MM-REx.
RL_NAMES = {
    "erm": "ERM",
    "irm": "IRM",
    "mmrex": "MM-REx (the paper's RL REx, penalty abs(R1 - R2))",
    "vrex": "V-REx (our extension; not in the REx RL code)",
}
# The outside anchor: denisyarats/pytorch_sac data/sac.csv, cartpole_swingup (its one run, seed 1): plain state SAC,
# 2 x 1024 networks, lr 1e-4, batch 1024, 5,000 seed steps, one update per step, action repeat 1.
ANCHOR = {"cartpole-swingup": ((20_000, 206.0), (40_000, 497.3), (60_000, 662.1), (80_000, 822.6), (100_000, 828.9))}
ANCHOR_LABEL = "pytorch_sac (data/sac.csv; 2x1024, batch 1024)"


def rl_name(method: str) -> str:
    return RL_NAMES.get(method, methods.get(method).display)


def check(settings: dict) -> None:
    """Refuse, before Ray starts, what would fail or mislead in every trial: bad ``k`` / ``hide``, a lone penalized domain.

    The observation layouts are the static table of :mod:`core.rl.layouts` (checked against dm_control by the tests).
    """
    hide = parse_hide(settings["hide"])
    tasks = list(settings["tasks"]) + ([settings["tune_task"]] if "tune" in settings["stages"] else [])
    for task in dict.fromkeys(tasks):
        try:
            kept_entries(LAYOUTS[task], settings["k"], hide)
        except ValueError as exc:
            raise GensweepError(f"{task}: {exc}") from None
    penalized = [m for m in settings["methods"] if methods.get(m).penalized]
    if penalized and len(settings["train_factors"]) < 2:
        raise GensweepError(f"methods {', '.join(penalized)} penalize differences between training domains: "
                            f"train_factors needs at least 2 factors, got {settings['train_factors']}")


def rl_trainable(config: dict, data=None) -> None:
    """tasks.rl.rl_trainable, imported when the trial starts (the rl extra is needed only there)."""
    from tasks.rl import rl_trainable as trainable

    trainable(config, data)


def _common(settings: dict) -> dict:
    keys = ("total_steps", "eval_every", "eval_episodes", "episode_steps", "random_steps", "batch_size", "critic_seq",
            "updates_per_step", "buffer_capacity", "seeding", "hidden", "encoder_hidden", "actor_lr", "critic_lr", "alpha_lr",
            "model_lr", "encoder_l1", "noise", "k", "train_factors", "test_factor", "hide")
    return {key: settings[key] for key in keys}


def _label(c: dict) -> str:
    return f"{c['task']} {c['method']} seed={c['seed']}"


def stages(settings: dict) -> list[Stage]:
    """Stage tune: a study per penalized method (ASHA on train_return); stage runs: tasks x methods x seeds."""
    out = []
    if "tune" in settings["stages"]:
        from ray.tune.schedulers import ASHAScheduler

        evals = -(-settings["total_steps"] // settings["eval_every"])
        top = float(settings["tune_max_penalty"])

        def space(trial) -> dict:
            trial.suggest_float("penalty_weight", 1.0, top, log=True)
            trial.suggest_int("anneal_iters", 0, settings["total_steps"])
            return {}

        penalized = [m for m in settings["methods"] if methods.get(m).penalized]
        search = Search(
            studies=[{**_common(settings), "task": settings["tune_task"], "method": m} for m in penalized],
            space=space, budget=settings["tune_samples"], study_name=lambda s: s["method"], paired_by=("task",),
        )
        scheduler = lambda: ASHAScheduler(metric="train_return", mode="max", max_t=evals, grace_period=1)
        if penalized:
            out.append(Stage("tune", rl_trainable, search, metric="train_return", mode="max", scheduler=scheduler, label=_label))
    if "runs" in settings["stages"]:
        tuned = "tune" in settings["stages"] and any(s.name == "tune" for s in out)
        plan = (lambda earlier: runs_grid(settings, tuned_values(earlier["tune"]))) if tuned else runs_grid(settings, {})
        out.append(Stage("runs", rl_trainable, plan, metric="test_return", mode="max", label=_label))
    return out


def tuned_values(tune_rows) -> dict[str, dict]:
    """method -> the tune stage's best (penalty_weight, anneal_iters) and the row they come from.

    Best = highest training-domain return among the method's configurations
    ASHA let run to the end (all of the method's when it stopped every one of
    them: one ASHA serves every method, so that is decided per method), ties
    by trial key.
    """
    if len(tune_rows) == 0:
        return {}
    pools = []
    for _, rows in tune_rows.groupby("method", sort=True):
        finished = rows[~rows["stopped_early"].astype(bool)] if "stopped_early" in rows else rows
        pools.append(finished if len(finished) else rows)
    pool = pd.concat(pools) if pools else tune_rows
    return {
        best.group[0]: {"penalty_weight": float(best.row["penalty_weight"]), "anneal_iters": int(best.row["anneal_iters"]),
                        "hparams_from": f"tune:{best.row['trial_key']}"}
        for best in best_rows(pool, "train_return", "max", top=1, group_by=("method",))
    }


def runs_grid(settings: dict, tuned: dict[str, dict]) -> Grid:
    """tasks x seeds x methods, each method at its tuned values when ``tuned`` has it, else at the settings' values."""
    default = {"penalty_weight": settings["penalty_weight"], "anneal_iters": settings["anneal_iters"], "hparams_from": "settings"}
    return Grid([
        {**_common(settings), "task": task, "method": method, "seed": seed, **tuned.get(method, default)}
        for task in settings["tasks"] for seed in range(settings["seeds"]) for method in settings["methods"]
    ])  # seed-major: trials started together cover every method, so a sweep stopped early still compares them


PAPER_AGENT = {key: AGENT[key] for key in ("hidden", "encoder_hidden", "batch_size", "actor_lr", "critic_lr", "critic_seq",
                                             "model_lr", "encoder_l1")}  # what the report's agent line compares


def report(frame, curves, out_dir: str) -> str:
    """Final returns (train / test domain, mean ± std over seeds), returns at each evaluation, curves per task, tuning."""
    parts = []
    runs = frame[frame["stage"] == "runs"] if "stage" in frame else frame
    if not runs.empty:
        parts.append(_agent_line(runs))
        rows = []
        for (task, method), group in runs.groupby(["task", "method"], sort=False):
            gap = group["train_return"] - group["test_return"]
            rows.append([task, rl_name(method), reports.pm(*reports.mean_std(group["train_return"])),
                         reports.pm(*reports.mean_std(group["test_return"])), reports.pm(*reports.mean_std(gap)), len(group)])
        parts.append("## Final return (mean ± std over seeds)\n\n" + _domains_line(runs) + "\n\n" + reports.markdown_table(
            ["task", "method", "train domain", "test domain", "train − test", "seeds"], rows))
        parts.append("## Penalty weight and anneal step of the runs\n\n" + _hparams_table(runs))
        if not curves.empty:
            merged = curves.merge(runs[["trial_key", "task", "method"]], on="trial_key")
            parts.append("## Return at each evaluation (mean over seeds)\n\n" + _steps_table(merged))
            for task, part in merged.groupby("task"):
                _curves(part, f"{out_dir}/curves_{task}.png", task)
    tuned = frame[frame["stage"] == "tune"] if "stage" in frame else frame.iloc[0:0]
    if not tuned.empty:
        columns = ["method", "penalty_weight", "anneal_iters", "train_return", "test_return", "stopped_early"]
        best = tuned.sort_values("train_return", ascending=False).groupby("method").head(3)
        rows = [[rl_name(r["method"]), f"{r['penalty_weight']:.3g}", int(r["anneal_iters"]), f"{r['train_return']:.1f}",
                 f"{r['test_return']:.1f}", bool(r["stopped_early"])] for _, r in best.iterrows()]
        parts.append("## Tuning (ASHA on the training-domain return): best configurations\n\n" + reports.markdown_table(columns, rows))
    return "\n\n".join(parts)


def _agent_line(runs) -> str:
    """The networks, batch and learning rates the runs used, and the paper's where they differ."""
    first = runs.iloc[0]
    items = []
    for key, paper in PAPER_AGENT.items():
        if key in runs:
            value = first[key]
            items.append(f"{key}={value:g}" + ("" if float(value) == paper else f" (paper {paper:g})"))
    return "**Agent:** " + ", ".join(items) + "."


def _domains_line(runs) -> str:
    first = runs.iloc[0]
    if "k" in runs and int(first["k"]) == 0:
        return "No spurious feature (k = 0): both domains are the plain task (the test domain is a second env of it)."
    train = first.get("train_factors", "[1.0, 2.0]")
    return f"Training domain (spurious factor {str(train).strip('[]').split(',')[0].strip()}; trained on {train}) vs test domain " \
           f"(factor {first.get('test_factor', 3.0)})."


def _steps_table(merged) -> str:
    """Rows: evaluation steps; columns: train / test return per task and method (mean over seeds); the anchor's."""
    means = merged.groupby(["task", "method", "step"])[["train_return", "test_return"]].mean()
    columns, series = ["step"], []
    for (task, method), part in means.groupby(level=[0, 1], sort=False):
        part = part.droplevel([0, 1])
        for column, where in (("train_return", "train"), ("test_return", "test")):
            columns.append(f"{task} {rl_name(method)} ({where})")
            series.append(part[column].to_dict())
        if task in ANCHOR and f"{task} anchor: {ANCHOR_LABEL}" not in columns:
            columns.append(f"{task} anchor: {ANCHOR_LABEL}")
            series.append(dict(ANCHOR[task]))
    steps = sorted({step for values in series for step in values if step <= merged["step"].max()})
    rows = [[int(step)] + [f"{values[step]:.1f}" if step in values else "" for values in series] for step in steps]
    return reports.markdown_table(columns, rows)


def _hparams_table(runs) -> str:
    """Per method: the penalty weight and anneal step its runs trained with, and whether the tune stage chose them."""
    rows = []
    for method, group in runs.groupby("method", sort=False):
        source = str(group["hparams_from"].iloc[0]) if "hparams_from" in group else "settings"
        where = f"tuned (tune row {source.split(':', 1)[1]})" if source.startswith("tune:") else "the settings"
        rows.append([rl_name(method), f"{float(group['penalty_weight'].iloc[0]):.4g}",
                     int(group["anneal_iters"].iloc[0]), where])
    return reports.markdown_table(["method", "penalty weight", "anneal step", "from"], rows)


def _curves(frame, path: str, task: str) -> None:
    """Return vs steps, one colour per method, solid = training domain, dashed = test domain, shaded ± std."""
    fig, ax = reports.figure(figsize=(6, 4))
    for i, (method, group) in enumerate(frame.groupby("method")):
        color = f"C{i}"
        for column, style, where in (("train_return", "-", "train"), ("test_return", "--", "test")):
            stats = group.groupby("step")[column].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, stats["mean"], style, color=color, label=f"{rl_name(method)} ({where})")
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.15)
    if task in ANCHOR:
        points = [(x, y) for x, y in ANCHOR[task] if x <= max(frame["step"].max(), ANCHOR[task][0][0])]
        ax.plot(*zip(*points), "o-", color="black", label=ANCHOR_LABEL)
    ax.set_xlabel("env steps per training domain")
    ax.set_ylabel("episode return")
    ax.set_title(f"{task}: training (solid) vs test (dashed) domain")
    ax.legend(fontsize=7)
    reports.save_figure(fig, path)


PIPELINE = Pipeline(
    name="rl-spurious",
    description="SAC with an ERM / IRM / V-REx / MM-REx reward model on DeepMind Control with spurious features (thesis §5.4)",
    settings=SETTINGS,
    presets=PRESETS,
    load_data=lambda settings, data_dir: NoData("dm_control"),
    stages=stages,
    report=report,
    check=check,
    preset_help=PRESET_HELP,
    run_defaults={"gpus_per_trial": 0.0},
    requires=("gymnasium", "dm_control", "mujoco", "shimmy"),
    extra="rl",
)
