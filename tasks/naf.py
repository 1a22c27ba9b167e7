"""Trainables of the NAF study (docs bayes.md §d.1-d.4): a block of K configurations of one flow shape, trained together.

Every trainable takes ``(config, data)``; ``config`` holds the shared keys (target or dataset, ``transformer``,
``flows``, ``hidden``, ``hidden_layers``, ``ds_dim``, ``ds_layers``, ``lr``, ``steps`` / ``max_epochs``, ``batch``)
and a ``block`` of per-configuration entries (``seed``; see :func:`tasks.report.configurations`). The K flows are
one stacked core.flows block; configuration k's initial weights, noise and data order come from its own seed only,
so a block of K equals K runs alone. One :class:`~tasks.report.Report` per evaluation, one metrics dict per
configuration, the last ``final``; the metrics themselves are core.naf.metrics (usable without a trainable):

- :func:`toy_trainable` (naf-toy): ``kl_nats`` = reverse KL(q‖p) = E_q[log q − U] + log Z for the energies U1..
  (log Z by quadrature, core.flows.energies.log_z), forward KL E_p[log p − log q] on fresh samples for ``mog4`` /
  ``grid10``; ``test_nll_nats`` (−E_p log q) for every density target (``swissroll``'s only metric, its ``kl_nats``
  is NaN); ``heat`` = q's mass on a 64 × 64 grid (report figures).
- :func:`sinewave_trainable` (naf-sinewave): ``mode_mass_0.6/1.2/1.8`` and ``kl_nats`` by quadrature over q's noise.
- :func:`tabular_trainable` (naf-tabular): ``test_ll_nats`` of the best-validation checkpoint, its ± 2 s.e. over
  test points, ``entropy_gap_nats`` where the density is known, epochs to best; transformer ``zuko-maf`` is the
  library anchor (core.naf.library: zuko's MAF, one seed after another, the same data order and protocol).
- :func:`vae_trainable` (naf-vae): test ``elbo`` and ``iw_bound`` of the best-validation-ELBO checkpoint.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from core.flows import model as flow
from core.flows.spec import FlowSpec
from core.flows.train import fit
from core.naf import data as ndata
from core.naf import metrics
from core.naf import sinewave as sw
from core.naf.metrics import noise, sample_block
from tasks.report import Report, configurations, tune_reporter

LIBRARY_MAF = "zuko-maf"  # naf-tabular's library anchor (core.naf.library), not a core.flows transformer


def spec_of(config: dict, dim: int) -> FlowSpec:
    """The block's FlowSpec from a config's shape keys."""
    return FlowSpec(dim=dim, transformer=str(config["transformer"]), flows=int(config["flows"]), hidden=int(config["hidden"]),
                    hidden_layers=int(config.get("hidden_layers", 1)), ds_dim=int(config.get("ds_dim", 16)),
                    ds_layers=int(config.get("ds_layers", 1)), flip=bool(config.get("flip", True)),
                    final_linear=bool(config.get("final_linear", True)), context=int(config.get("context", 0)),
                    base_log_var=float(config.get("base_log_var", 0.0)), order=config.get("order"))


def clip_of(config: dict) -> float | None:
    """The gradient-norm clip; 0 or absent: none."""
    return float(config["clip"]) if config.get("clip") else None


def seeds_of(config: dict) -> list[int]:
    return [int(c["seed"]) for c in configurations(config)]


def step_progress(report, key: str, steps: int):
    """``on_eval`` for :func:`core.flows.train.fit`: a non-final Report of ``key`` per evaluation before the last step."""
    def on_eval(step: int, metric: torch.Tensor) -> None:
        if step < steps - 1:
            report(Report(step=step + 1, final=False, metrics=[{key: float(v)} for v in metric]))
    return on_eval


def epoch_minibatches(n: int, batch: int, generators: list[torch.Generator]):
    """step -> (K, batch) indices into n examples: each model's own permutation, drawn anew at every epoch's first step."""
    per_epoch = max(1, n // batch)
    order: list[torch.Tensor] = []

    def indices(step: int) -> torch.Tensor:
        i = step % per_epoch
        if i == 0:
            order[:] = [torch.stack([torch.randperm(n, generator=g) for g in generators])]
        return order[0][:, i * batch:(i + 1) * batch]
    return indices


# ============================================================================ naf-toy


def _energy_run(config: dict, report) -> list[dict]:
    from core.flows import energies

    target = str(config["target"])
    u = energies.ENERGIES[target]
    seeds = seeds_of(config)
    spec = spec_of(config, 2)
    params = flow.init_block(spec, seeds)
    gens = [torch.Generator().manual_seed(1_000_003 * s + 17) for s in seeds]
    steps, batch, every = int(config["steps"]), int(config["batch"]), int(config.get("eval_every", 1000))

    evals = [torch.Generator().manual_seed(7_000_001 * s + 5) for s in seeds]
    fit(params, lambda step: _energy_loss(spec, params, u, gens, batch), steps, float(config["lr"]), clip=clip_of(config),
        eval_fn=lambda: _energy_loss(spec, params, u, evals, 1024), eval_every=every,
        on_eval=step_progress(report, "train_loss", steps))
    log_z = float(energies.log_z(target))
    return metrics.energy_metrics(spec, params, u, log_z, seeds, int(config["eval_samples"]))  # the last weights


def _energy_loss(spec, params, u, gens, n) -> torch.Tensor:
    z, log_q = sample_block(spec, params, noise(gens, n, 2))
    return (log_q - u(z)).mean(1)


def _density_run(config: dict, report) -> list[dict]:
    target = str(config["target"])
    seeds = seeds_of(config)
    spec = spec_of(config, 2)
    params = flow.init_block(spec, seeds)
    steps, batch, every = int(config["steps"]), int(config["batch"]), int(config.get("eval_every", 1000))
    pool = torch.from_numpy(np.stack([ndata.toy_sample(target, steps * batch, 10_000 + s) for s in seeds]))  # (K, steps*B, 2)
    val = torch.from_numpy(ndata.toy_sample(target, 4096, 777_777))

    def loss_fn(step: int) -> torch.Tensor:
        return -flow.log_prob(spec, params, pool[:, step * batch:(step + 1) * batch]).mean(1)

    fit(params, loss_fn, steps, float(config["lr"]), clip=clip_of(config),
        eval_fn=lambda: -flow.log_prob(spec, params, val).mean(1), eval_every=every, on_eval=step_progress(report, "val_nll", steps))
    return metrics.density_metrics(spec, params, target, int(config["eval_samples"]))  # the last weights, as naf_examples


def run_toy(config: dict, report) -> list[dict]:
    """Train the block; ``report`` gets a Report per evaluation, the last ``final``; returns the final metrics."""
    torch.manual_seed(0)
    start = time.time()
    rows = (_density_run if config["task"] == "density" else _energy_run)(config, report)
    for row in rows:
        row["wall_s"] = time.time() - start
    report(Report(step=int(config["steps"]), final=True, metrics=rows))
    return rows


def toy_trainable(config: dict, data=None) -> None:
    """Ray Tune function trainable for naf-toy (the targets are generated: ``data`` is unused)."""
    run_toy(config, tune_reporter())


# ============================================================================ naf-sinewave


def sinewave_run(config: dict, report) -> list[dict]:
    """Fit q(f) to the sine-wave posterior with the annealed reverse KL (sf_sinewave.py); quadrature metrics."""
    start = time.time()
    seeds = seeds_of(config)
    spec = spec_of(config, 1)
    params = flow.init_block(spec, seeds)
    gens = [torch.Generator().manual_seed(1_000_003 * s + 29) for s in seeds]
    steps, batch, every = int(config["steps"]), int(config["batch"]), int(config.get("eval_every", 1000))

    def log_q_f(eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, log_qh = sample_block(spec, params, eps)
        f, log_df = sw.squash(h[..., 0])
        return f, log_qh - log_df

    def loss_fn(step: int) -> torch.Tensor:
        f, log_q = log_q_f(noise(gens, batch, 1))
        return (log_q - sw.annealing(step, steps) * sw.log_likelihood(f)).mean(1)

    fit(params, loss_fn, steps, float(config["lr"]), clip=clip_of(config), eval_fn=lambda: loss_fn(steps), eval_every=every,
        on_eval=step_progress(report, "train_loss", steps))
    with torch.no_grad():  # the last weights, as sf_sinewave.py plots them
        eps, weights = sw.eps_grid()
        f, log_q = log_q_f(eps.float().view(1, -1, 1).expand(len(seeds), -1, -1).contiguous())
        rows = sw.q_metrics(f, log_q, weights, sw.log_z())
        samples, _ = log_q_f(noise([torch.Generator().manual_seed(4242 + s) for s in seeds], 20_000, 1))
    for k, row in enumerate(rows):
        row.update(metrics.sine_sample_metrics(samples[k].double().numpy(), f[k], weights, sw.P["f_max"], sw.HALF_WIDTH),
                   wall_s=time.time() - start)
    report(Report(step=steps, final=True, metrics=rows))
    return rows


def sinewave_trainable(config: dict, data=None) -> None:
    """Ray Tune function trainable for naf-sinewave."""
    sinewave_run(config, tune_reporter())


# ============================================================================ naf-tabular


def tabular_minibatches(n: int, batch: int, seeds: list[int]):
    """step -> (K, batch) training indices, configuration k's order from its seed alone."""
    return epoch_minibatches(n, batch, [torch.Generator().manual_seed(1_000_003 * s + 41) for s in seeds])


def _tabular_rows(ll: torch.Tensor, data: ndata.Tabular) -> list[dict]:
    true_ll = torch.from_numpy(ndata.mixture6_log_prob(data.test)) if data.name == "mixture6" else None
    return metrics.tabular_ll_metrics(ll, true_ll)


def library_tabular_run(config: dict, data: ndata.Tabular, report) -> list[dict]:
    """``zuko-maf``: the library's MAF (core.naf.library), one model per seed in turn, our data order and protocol."""
    from core.naf import library

    start, rows = time.time(), []
    seeds = seeds_of(config)
    train, val, test = (torch.from_numpy(np.ascontiguousarray(p)) for p in (data.train, data.val, data.test))
    batch, max_epochs = int(config["batch"]), int(config["max_epochs"])
    for seed in seeds:
        flow = library.zuko_maf(data.dim, int(config["flows"]), int(config["hidden"]), int(config.get("hidden_layers", 1)), seed)
        minibatch = tabular_minibatches(len(train), batch, [seed])
        on_epoch = (lambda epoch, nll: report(Report(step=epoch, final=False, metrics=[{"val_nll": nll}]))) if len(seeds) == 1 else None
        result = library.fit_maf(flow, train, val, lambda step, m=minibatch: m(step)[0], lr=float(config["lr"]), batch=batch,
                                 max_epochs=max_epochs, patience=int(config["patience"]), clip=clip_of(config), on_epoch=on_epoch)
        (row,) = _tabular_rows(library.best_log_prob(result, test)[None], data)
        rows.append(dict(row, val_nll_best=result.best_val_nll, epochs_to_best=float(result.best_epoch), epochs_run=float(result.epochs_run)))
    for row in rows:
        row["wall_s"] = time.time() - start
    report(Report(step=max_epochs, final=True, metrics=rows))
    return rows


def tabular_run(config: dict, data: ndata.Tabular, report) -> list[dict]:
    """Maximum likelihood with minibatches, validation NLL every epoch, best-validation checkpoint, patience (epochs)."""
    if config["transformer"] == LIBRARY_MAF:
        return library_tabular_run(config, data, report)
    start = time.time()
    seeds = seeds_of(config)
    spec = spec_of(config, data.dim)
    params = flow.init_block(spec, seeds)
    train, val, test = (torch.from_numpy(np.ascontiguousarray(p)) for p in (data.train, data.val, data.test))
    batch = int(config["batch"])
    per_epoch = max(1, len(train) // batch)
    minibatch = tabular_minibatches(len(train), batch, seeds)

    def loss_fn(step: int) -> torch.Tensor:
        return -flow.log_prob(spec, params, train[minibatch(step)]).mean(1)

    def mean_log_prob(p, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([flow.log_prob(spec, p, x[i:i + metrics.EVAL_CHUNK]).double()
                          for i in range(0, len(x), metrics.EVAL_CHUNK)], 1)

    def on_eval(step: int, metric: torch.Tensor) -> None:
        epoch = (step + 1) // per_epoch
        report(Report(step=epoch, final=False, metrics=[{"val_nll": float(v)} for v in metric]))

    result = fit(params, loss_fn, int(config["max_epochs"]) * per_epoch, float(config["lr"]), clip=clip_of(config),
                 polyak=float(config.get("polyak", 0.0)), eval_fn=lambda: -mean_log_prob(params, val).mean(1),
                 eval_every=per_epoch, patience=int(config["patience"]), on_eval=on_eval)
    with torch.no_grad():  # in float64: an exp-scale (maf) flow can overflow float32 on a heavy-tailed test point
        ll = mean_log_prob([p.double() for p in result.best_params], test.double())
    rows = _tabular_rows(ll, data)
    for k, row in enumerate(rows):
        row.update(val_nll_best=float(result.best_metric[k]), epochs_to_best=float(int(result.best_step[k]) // per_epoch + 1),
                   epochs_run=float(int(result.steps_done[k]) / per_epoch), wall_s=time.time() - start)
    report(Report(step=int(config["max_epochs"]), final=True, metrics=rows))
    return rows


def tabular_trainable(config: dict, data) -> None:
    """Ray Tune function trainable for naf-tabular; ``data`` maps dataset name -> core.naf.data.Tabular."""
    tabular_run(config, data.sets[str(config["dataset"])], tune_reporter())


# ============================================================================ naf-vae


def vae_run(config: dict, data, report) -> list[dict]:
    """Train VAEs with a flow posterior (core.naf.vae) on dynamically binarised images; best-validation-ELBO checkpoint,
    then the test ELBO and importance-weighted bound (``iw_samples`` samples)."""
    from core.naf import vae as nv

    start = time.time()
    seeds = seeds_of(config)
    z_dim, posterior = int(config["z_dim"]), str(config["transformer"])
    spec = None if posterior == "gaussian" else FlowSpec(
        dim=z_dim, transformer=posterior, flows=int(config["flows"]), hidden=int(config["flow_hidden"]), hidden_layers=1,
        ds_dim=int(config["ds_dim"]), ds_layers=int(config["ds_layers"]), context=int(config.get("context", 0)),
        final_linear=bool(config.get("final_linear", True)))
    model = nv.init_vae(seeds, z_dim, int(config["hidden"]), spec)
    params = nv.all_params(model)
    sizes = [len(model["enc"]), len(model["dec"]), len(model["flow"])]
    train, val, test = data.train, data.val, data.test
    batch = int(config["batch"])
    per_epoch = max(1, len(train) // batch)
    gens = [torch.Generator().manual_seed(1_000_003 * s + 53) for s in seeds]
    minibatch = epoch_minibatches(len(train), batch, gens)

    def as_model(tensors: list[torch.Tensor]) -> dict:
        a, b = sizes[0], sizes[0] + sizes[1]
        return {"enc": tensors[:a], "dec": tensors[a:b], "flow": tensors[b:]}

    def loss_fn(step: int) -> torch.Tensor:
        idx = minibatch(step)
        x = torch.stack([torch.bernoulli(train[idx[k]], generator=g) for k, g in enumerate(gens)])
        log_px, kl = nv.elbo_terms(model, spec, x, noise(gens, x.shape[1], z_dim))
        w = nv.anneal(step, int(config["anneal_steps"]), float(config["anneal_start"]))
        return -log_px.mean(1) + torch.clamp(w * kl.mean(1), min=float(config["free_bits"]))

    def on_eval(step: int, metric: torch.Tensor) -> None:
        report(Report(step=(step + 1) // per_epoch, final=False, metrics=[{"val_elbo": -float(v)} for v in metric]))

    result = fit(params, loss_fn, int(config["epochs"]) * per_epoch, float(config["lr"]), clip=clip_of(config),
                 polyak=float(config.get("polyak", 0.0)), on_eval=on_eval, eval_every=per_epoch,
                 eval_fn=lambda: -nv.bounds(model, spec, val, z_dim, 1, torch.Generator().manual_seed(5))[0])
    elbo, iw = nv.bounds(as_model(result.best_params), spec, test, z_dim, int(config["iw_samples"]), torch.Generator().manual_seed(11))
    rows = [{"elbo": float(elbo[k]), "iw_bound": float(iw[k]), "val_elbo_best": -float(result.best_metric[k]),
             "epochs_to_best": float(int(result.best_step[k]) // per_epoch + 1), "wall_s": time.time() - start} for k in range(len(seeds))]
    report(Report(step=int(config["epochs"]), final=True, metrics=rows))
    return rows


def vae_trainable(config: dict, data) -> None:
    """Ray Tune function trainable for naf-vae; ``data`` is a core.naf.vae.VaeImages."""
    vae_run(config, data, tune_reporter())
