"""naf-vae: the flow-posterior VAE's terms (KL direction, bounds), its trainable and its pipeline's settings."""
from __future__ import annotations

import math

import pytest
import torch

from core.data import DataError
from core.flows import model as flow
from core.flows.spec import FlowSpec
from core.naf import vae as nv
from pipelines.engine.spec import GensweepError, resolve_settings
from pipelines.naf import vae
from tasks import naf as tasks
from tasks.report import configurations


def test_gaussian_posterior_kl_is_kl_q_to_prior():
    """E_eps[log q(z|x) - log p(z)] = KL(N(mu, sigma) || N(0, I)), the closed form, for the plain VAE."""
    model = nv.init_vae([0], 3, 16, None, pixels=5)
    x = torch.bernoulli(torch.full((1, 1, 5), 0.5), generator=torch.Generator().manual_seed(0))
    eps = torch.randn(1, 200_000, 3, generator=torch.Generator().manual_seed(1))
    _, kl = nv.elbo_terms(model, None, x, eps)
    out = nv._mlp(model["enc"], x).detach()
    mu, sigma = out[..., :3], torch.nn.functional.softplus(out[..., 3:]) + 1e-4
    closed = float((0.5 * (mu ** 2 + sigma ** 2 - 1) - torch.log(sigma)).sum())
    assert float(kl.mean()) == pytest.approx(closed, abs=0.01)


def test_bounds_one_sample_iw_equals_elbo_and_more_samples_tighten():
    spec = FlowSpec(dim=4, transformer="dsf", flows=1, hidden=8, ds_dim=4)
    model = nv.init_vae([0, 1], 4, 16, spec, pixels=784)
    x = torch.rand(20, 784)
    elbo, iw = nv.bounds(model, spec, x, 4, 1, torch.Generator().manual_seed(3))
    assert torch.allclose(elbo, iw, atol=1e-4)
    elbo, iw = nv.bounds(model, spec, x, 4, 50, torch.Generator().manual_seed(3))
    assert bool((iw > elbo).all())


def test_vae_trainable_runs_and_reports(tmp_path):
    data = nv.load_images(None)
    cfg = dict(transformer="dsf", flows=1, z_dim=4, hidden=16, flow_hidden=8, ds_dim=4, ds_layers=1, epochs=2, batch=256, lr=1e-3,
               clip=5.0, polyak=0.0, anneal_steps=10, anneal_start=1e-4, free_bits=0.1, iw_samples=5, block=[{"seed": 0}])
    reports = []
    row = tasks.vae_run(cfg, data, reports.append)[0]
    assert [r.step for r in reports] == [1, 2, 2] and reports[-1].final
    assert math.isfinite(row["elbo"]) and row["iw_bound"] >= row["elbo"] - 1.0 and row["elbo"] < 0
    with pytest.raises(DataError, match="data directory not found"):
        nv.load_images(str(tmp_path / "none"))


def test_vae_presets_and_bad_settings():
    settings = resolve_settings(vae.PIPELINE, "smoke", [])
    configs = [c for s in vae.PIPELINE.stages(settings) for c in s.plan.configs]
    assert [(c["transformer"], c["flows"]) for c in configs] == [("gaussian", 0), ("affine-gated", 1), ("dsf", 1)]
    assert len([u for c in configs for u in configurations(c)]) == 3
    with pytest.raises(GensweepError, match="bad value for flow_hidden: 8 \\(must be >= z_dim 16\\)"):
        resolve_settings(vae.PIPELINE, "smoke", ["flow_hidden=8"])
    with pytest.raises(GensweepError, match="bad value for posteriors: 'iaf'"):
        resolve_settings(vae.PIPELINE, "smoke", ["posteriors=iaf"])


def test_faithful_posterior_flow_is_conditioned_on_the_encoders_context():
    """vae_experiments.py's inf: z0 = mu(c) + sigma(c) eps (the context-fed LinearFlow: the encoder's head on its last
    hidden layer c), then IAFs whose cMADE takes c: elbo_terms equals that computed by hand, and the flow's output
    moves with the context (two images, same z0 and noise)."""
    spec = FlowSpec(dim=3, transformer="dsf", flows=2, hidden=6, ds_dim=4, context=16, final_linear=False)
    model = nv.init_vae([0, 1], 3, 16, spec, pixels=5)
    with torch.no_grad():
        for t in model["flow"]:
            t.add_(0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(t.numel())))
    x = torch.bernoulli(torch.full((2, 4, 5), 0.5), generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(1))
    log_px, kl = nv.elbo_terms(model, spec, x, eps)
    c = nv._mlp(model["enc"][:-2], x, last_activation=True)
    out = torch.baddbmm(model["enc"][-1], c, model["enc"][-2])
    sigma = torch.nn.functional.softplus(out[..., 3:]) + 1e-4
    z0 = out[..., :3].repeat_interleave(2, 1) + sigma.repeat_interleave(2, 1) * eps
    z, logdet = flow.forward(spec, model["flow"], z0, c.repeat_interleave(2, 1))
    log_q = -0.5 * (eps ** 2).sum(-1) - 1.5 * nv.LOG_2PI - torch.log(sigma).sum(-1).repeat_interleave(2, 1) - logdet
    assert torch.allclose(kl, log_q - (-0.5 * (z ** 2).sum(-1) - 1.5 * nv.LOG_2PI), atol=1e-5)
    same_z0 = z0[:, :1].expand(-1, 4, -1).contiguous()
    moved, _ = flow.forward(spec, model["flow"], same_z0, c)
    assert (moved[:, 1:] - moved[:, :1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="encoder's last hidden layer"):
        nv.init_vae([0], 3, 16, FlowSpec(dim=3, transformer="dsf", hidden=6, context=5), pixels=5)


def test_vae_faithful_setting_keys_and_unchanged_ids():
    """faithful adds context = hidden and final_linear = False to the flow configs (not the plain VAE); off (every
    preset), the configs carry neither key, so the recorded sweeps keep their trial keys."""
    settings = resolve_settings(vae.PIPELINE, "smoke", ["faithful=true"])
    configs = [c for s in vae.PIPELINE.stages(settings) for c in s.plan.configs]
    flows = [c for c in configs if c["transformer"] != "gaussian"]
    assert flows and all((c["context"], c["final_linear"]) == (settings["hidden"], False) for c in flows)
    assert all("context" not in c for c in configs if c["transformer"] == "gaussian")
    for preset in vae.PRESETS:
        plain = [c for s in vae.PIPELINE.stages(resolve_settings(vae.PIPELINE, preset, [])) for c in s.plan.configs]
        assert all("context" not in c and "final_linear" not in c for c in plain)


def test_vae_trainable_faithful_runs(monkeypatch):
    """The config's context / final_linear reach the posterior's FlowSpec (context = the encoder width)."""
    specs = []
    init = nv.init_vae
    monkeypatch.setattr(nv, "init_vae", lambda seeds, z, hidden, spec, **kw: specs.append(spec) or init(seeds, z, hidden, spec, **kw))
    data = nv.load_images(None)
    cfg = dict(transformer="affine-gated", flows=2, z_dim=4, hidden=16, flow_hidden=8, ds_dim=4, ds_layers=1, epochs=1, batch=256,
               lr=1e-3, clip=5.0, polyak=0.0, anneal_steps=10, anneal_start=1e-4, free_bits=0.1, iw_samples=3, context=16,
               final_linear=False, block=[{"seed": 0}])
    row = tasks.vae_run(cfg, data, lambda r: None)[0]
    assert math.isfinite(row["elbo"]) and row["elbo"] < 0
    assert (specs[0].context, specs[0].final_linear, specs[0].flows) == (16, False, 2)
