"""Toy linear SEMs: generator properties, solvers on hand-checkable cases, the task and the pipeline (no Ray)."""
import math

import numpy as np
import pytest
import torch

from core import methods
from core.sem import train as st
from core.sem.data import (
    SETTINGS, SIGMAS, Domain, SemSetting, build_sem_task, coefficient_errors, make_sem, sample_domain, setting_from_code,
)
from tasks.sem import run_sem

FOU, FOS, FEU, PES = (setting_from_code(c) for c in ("FOU", "FOS", "FEU", "PES"))


def domain(x, y, sigma=1.0):
    return Domain(sigma=sigma, inputs=np.asarray(x, dtype=float), target=np.asarray(y, dtype=float))


# ---------------------------------------------------------------- generator


def test_eight_settings_with_paper_codes():
    assert [s.code for s in SETTINGS] == ["FOU", "FOS", "FEU", "FES", "POU", "POS", "PEU", "PES"]
    assert PES == SemSetting(hidden=True, hetero=True, scrambled=True)
    with pytest.raises(ValueError, match="unknown SEM setting"):
        setting_from_code("XYZ")


def test_shapes_domains_and_determinism():
    sem, domains = build_sem_task(PES, seed=3, dim=10, n_samples=1000)
    assert [d.sigma for d in domains] == list(SIGMAS) == [0.2, 2.0, 5.0]
    for d in domains:
        assert d.inputs.shape == (1000, 10) and d.target.shape == (1000,)
    assert sem.causal_coefficients().shape == (10,)
    _, again = build_sem_task(PES, seed=3, dim=10, n_samples=1000)
    _, other = build_sem_task(PES, seed=4, dim=10, n_samples=1000)
    assert np.array_equal(domains[1].inputs, again[1].inputs)
    assert not np.allclose(domains[1].inputs, other[1].inputs)
    with pytest.raises(ValueError, match="even"):
        build_sem_task(FOU, seed=0, dim=7)


def test_domain_sigma_scales_the_causes():
    # Fully observed: x = h + sigma * eps with h = sigma * eps', so Var(x_j) = 2 sigma^2.
    sem, domains = build_sem_task(FOU, seed=0, n_samples=20000)
    for d in domains:
        var = d.inputs[:, :5].var(axis=0)
        assert np.allclose(var, 2 * d.sigma**2, rtol=0.06)


def test_scrambling_is_orthogonal_and_only_rotates_the_inputs():
    sem_s, scrambled = build_sem_task(FOS, seed=1, n_samples=500)
    sem_u, plain = build_sem_task(FOU, seed=1, n_samples=500)
    s = sem_s.scramble
    assert np.allclose(s @ s.T, np.eye(10)) and not np.allclose(s, np.eye(10))
    assert np.array_equal(sem_u.scramble, np.eye(10))
    for a, b in zip(scrambled, plain):  # same seed, same noise: inputs differ by S only
        assert np.allclose(a.inputs @ s.T, b.inputs)
        assert np.array_equal(a.target, b.target)
    # A predictor on scrambled inputs has coefficients S @ beta on [x, z].
    beta = np.arange(10.0)
    assert np.allclose(scrambled[0].inputs @ beta, plain[0].inputs @ sem_s.to_original(beta))


def test_fully_observed_has_no_confounding_path():
    sem, domains = build_sem_task(FEU, seed=2, n_samples=20000)
    assert np.array_equal(sem.w_hx, np.eye(5))
    assert not sem.w_hy.any() and not sem.w_hz.any()
    assert np.allclose(sem.causal_coefficients(), [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    # Regressing the target on x alone recovers the causal coefficients in every domain.
    for d in domains:
        coef = np.linalg.lstsq(d.inputs[:, :5], d.target, rcond=None)[0]
        assert np.allclose(coef, 1.0, atol=0.03)
    hidden, _ = build_sem_task(PES, seed=2, n_samples=10)
    assert hidden.w_hy.any() and hidden.w_hz.any() and not np.array_equal(hidden.w_hx, np.eye(5))


def test_homoskedastic_swaps_the_noise_scales_of_y_and_z():
    # ones=True, fully observed: target - sum(x) = sum of the 5 y-noises (variance 5 s_y^2)
    # and sum(z) - target = sum of the 5 z-noises (variance 5 s_z^2).
    sigma, n = 5.0, 40000
    for hetero, (s_y, s_z) in ((True, (sigma, 1.0)), (False, (1.0, sigma))):
        rngs = [np.random.default_rng(k) for k in range(3)]
        sem = make_sem(SemSetting(False, hetero, False), 10, True, weights_rng=rngs[0], scramble_rng=rngs[1])
        d = sample_domain(sem, n, sigma, rngs[2])
        y_noise = d.target - d.inputs[:, :5].sum(axis=1)
        z_noise = d.inputs[:, 5:].sum(axis=1) - d.target
        assert y_noise.var() == pytest.approx(5 * s_y**2, rel=0.05)
        assert z_noise.var() == pytest.approx(5 * s_z**2, rel=0.05)


def test_gaussian_weights_when_not_ones():
    sem, _ = build_sem_task(FOU, seed=0, n_samples=10, ones=False)
    assert not np.allclose(sem.w_xy, np.eye(5))
    assert np.all(sem.causal_coefficients()[:5] != 0) and not sem.causal_coefficients()[5:].any()


def test_coefficient_errors_by_hand():
    # causal: mean(0.1^2, 0.1^2) = 0.01; non-causal: mean(0.2^2, 0) = 0.02.
    causal, noncausal = coefficient_errors(np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.9, 1.1, 0.2, 0.0]))
    assert causal == pytest.approx(0.01) and noncausal == pytest.approx(0.02)
    assert coefficient_errors(np.zeros(2), np.ones(2)) == (0.0, 1.0)


# ---------------------------------------------------------------- objectives and solvers


def test_risks_and_irm_penalties_by_hand():
    # x = (1, 2), y = (1, 3), beta = 1: residuals (0, -1), R = 0.5;
    # dR(s beta)/ds = 2 mean(residual * x beta) = 2 * (-2) / 2 = -2, penalty 4 (vector dummy with Phi = [[1]] too).
    m = st.moments([domain([[1.0], [2.0]], [1.0, 3.0])])
    beta = torch.ones(1, 1, dtype=torch.float64)
    assert st.domain_risks(beta, m).item() == pytest.approx(0.5)
    assert st.irm_penalties(beta, None, m, "scalar").item() == pytest.approx(4.0)
    assert st.irm_penalties(beta, torch.ones(1, 1, 1, dtype=torch.float64), m, "vector").item() == pytest.approx(4.0)


def test_irm_penalty_matches_the_reference_autograd_form():
    _, domains = build_sem_task(PES, seed=0, n_samples=200)
    m = st.moments(domains[:2])
    gen = torch.Generator().manual_seed(0)
    phi = torch.eye(10, dtype=torch.float64) + 0.1 * torch.randn(2, 10, 10, generator=gen, dtype=torch.float64)
    beta = phi.sum(dim=-1)
    ours_vector = st.irm_penalties(beta, phi, m, "vector")
    ours_scalar = st.irm_penalties(beta, None, m, "scalar")
    risks = st.domain_risks(beta, m)
    for g in range(2):
        for e in range(2):
            x, y = torch.as_tensor(domains[e].inputs), torch.as_tensor(domains[e].target).unsqueeze(1)
            w = torch.ones(10, 1, dtype=torch.float64, requires_grad=True)
            risk = (x @ phi[g] @ w - y).pow(2).mean()
            (gw,) = torch.autograd.grad(risk, w)
            s = torch.ones((), dtype=torch.float64, requires_grad=True)
            (gs,) = torch.autograd.grad((s * (x @ beta[g]).unsqueeze(1) - y).pow(2).mean(), s)
            assert risks[g, e].item() == pytest.approx(risk.item(), rel=1e-9)
            assert ours_vector[g, e].item() == pytest.approx(gw.pow(2).mean().item(), rel=1e-9)
            assert ours_scalar[g, e].item() == pytest.approx(gs.pow(2).item(), rel=1e-9)


def _sem_objective(method, risks, irm, weights):
    """The SEM solvers' loss: the registry's objective with the SEM code's conventions (sums, no L2)."""
    return methods.objective(
        method, risks, irm, 0.0, step=0, l2=0.0, penalty_weight=weights, anneal_iters=0,
        reduction=st.RISK_REDUCTION, irm_reduction=st.IRM_REDUCTION,
    )


def test_penalties_are_the_registry_ones_for_two_domains():
    risks, one = torch.tensor([[1.0, 3.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    assert _sem_objective("vrex", risks, None, one)[1].item() == pytest.approx(4.0)  # (R1 - R2)^2
    assert _sem_objective("mmrex", risks, None, one)[1].item() == pytest.approx(2.0)  # |R1 - R2|
    irm = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    assert _sem_objective("irm", risks, irm, one)[1].item() == pytest.approx(0.75)  # summed over domains


def test_sem_loss_and_reg_mapping_by_hand():
    # Risks (1, 2), V-REx penalty (1 - 2)^2 = 1 -> use MM-REx |1 - 2| = 1 and weights 0.5, 10, inf:
    risks = torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64)
    loss, penalty = _sem_objective("mmrex", risks, None, torch.tensor([0.5, 10.0, math.inf], dtype=torch.float64))
    # w <= 1: 3 + 0.5 * 1; w > 1: 3 / 10 + 1; w = inf: the penalty alone.
    assert loss.tolist() == pytest.approx([3.5, 1.3, 1.0])
    assert st.REFERENCE_PENALTY_WEIGHTS[0] == math.inf
    assert st.REFERENCE_PENALTY_WEIGHTS[-1] == pytest.approx(9.0)  # reg 0.1
    for reg in st.REFERENCE_REGS:
        assert st.reg_from_penalty_weight(st.penalty_weight_from_reg(reg)) == pytest.approx(reg)
    # Proportional to the reference's reg * sum R + (1 - reg) * penalty, with factor (1 - reg).
    reg = 1e-3
    w = torch.tensor([st.penalty_weight_from_reg(reg)])
    reference = reg * risks[:1].sum() + (1 - reg) * penalty[:1]
    assert (1 - reg) * _sem_objective("mmrex", risks[:1], None, w)[0].item() == pytest.approx(reference.item())


def test_erm_is_least_squares_on_all_domains_pooled():
    _, domains = build_sem_task(PES, seed=5, n_samples=300)
    x = np.concatenate([d.inputs for d in domains])
    y = np.concatenate([d.target for d in domains])
    expected = np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.allclose(st.least_squares(domains), expected, atol=1e-10)
    assert np.allclose(st.fit("erm", domains, st.SolverConfig()).beta, expected, atol=1e-10)


def test_erm_nearly_causal_without_confounding():
    # FOU: the IRM reference's ERM errors are about 0.009 (causal) and 0.009 (non-causal).
    sem, domains = build_sem_task(FOU, seed=0)
    causal, noncausal = coefficient_errors(sem.causal_coefficients(), sem.to_original(st.fit_erm(domains).beta))
    assert causal < 0.02 and noncausal < 0.02


def test_grid_models_do_not_interact():
    # Training the reference grid as one block gives each model what it gets alone.
    _, domains = build_sem_task(FEU, seed=0, n_samples=300)
    for method in ("irm", "vrex"):
        grid = st.fit_penalized(method, domains, st.SolverConfig(steps=60))
        alone = st.fit_penalized(method, domains, st.SolverConfig(steps=60, penalty_weight=grid.penalty_weight))
        assert np.allclose(grid.beta, alone.beta, atol=1e-10)


def test_solver_rejects_bad_input():
    _, domains = build_sem_task(FOU, seed=0, n_samples=20)
    with pytest.raises(ValueError, match="unknown SEM method"):
        st.fit("sgd", domains, st.SolverConfig())
    with pytest.raises(ValueError, match="validation"):
        st.fit_penalized("irm", domains[:2], st.SolverConfig(steps=1))
    with pytest.raises(ValueError, match="dummy"):
        st.fit_penalized("irm", domains, st.SolverConfig(steps=1, irm_dummy="matrix"))


# ---------------------------------------------------------------- task and pipeline


@pytest.mark.parametrize("method", ["erm", "irm", "vrex", "mmrex"])
def test_run_sem_reports_finite_errors(method):
    reports = []
    config = dict(hidden=True, hetero=False, scrambled=True, method=method, seed=0, n_samples=200, steps=50, eval_every=20)
    final = run_sem(config, reports.append)
    assert math.isfinite(final["causal_error"]) and math.isfinite(final["noncausal_error"])
    assert reports[-1].metrics == [final] and reports[-1].final and not any(r.final for r in reports[:-1])
    assert [r.step for r in reports] == ([0] if method == "erm" else [20, 40, 50])
    assert all(isinstance(v, (int, float)) for r in reports for v in r.metrics[0].values())


def test_run_sem_same_seed_same_data_across_methods():
    base = dict(hidden=False, hetero=True, scrambled=False, seed=1, n_samples=100, steps=0)
    erm = run_sem({**base, "method": "erm"}, lambda r: None)
    again = run_sem({**base, "method": "erm"}, lambda r: None)
    assert erm == again


def test_pipeline_grid_and_report(tmp_path):
    import pandas as pd

    from pipelines.rex import toy_sem
    from pipelines.registry import get
    from pipelines.engine.spec import GensweepError, resolve_settings

    assert get("toy-sem") is toy_sem.PIPELINE
    assert toy_sem.PIPELINE.load_data({}, "ignored").fingerprint == "toy-sem"  # generates its own data
    (stage,) = toy_sem.stages(resolve_settings(toy_sem.PIPELINE, "smoke", []))
    configs = stage.plan.configs
    (paper,) = toy_sem.stages(resolve_settings(toy_sem.PIPELINE, "paper", []))
    assert len(configs) == 8 * 4 * 2 and len(paper.plan.configs) == 8 * 4 * 10
    assert all(isinstance(v, (bool, int, float, str)) for c in configs for v in c.values())
    assert {c["ones"] for c in configs} == {True}  # the IRM code's weights by default
    (gaussian,) = toy_sem.stages(resolve_settings(toy_sem.PIPELINE, "smoke", ["weights=gaussian"]))
    assert {c["ones"] for c in gaussian.plan.configs} == {False}
    with pytest.raises(GensweepError, match="bad value for settings: 'FOX'"):
        resolve_settings(toy_sem.PIPELINE, "smoke", ["settings=FOX"])
    rows = []
    for config in configs[:: 2]:  # one repetition of everything, cheap: no training steps
        rows.append({**config, **run_sem({**config, "steps": 0}, lambda r: None)})
    frame = pd.DataFrame(rows)
    markdown = toy_sem.report(frame, pd.DataFrame(), str(tmp_path))
    assert markdown.count("\n| ") >= 8 * 4 and "± " in markdown and "Weights: ones: W_xy = W_yz = I" in markdown
    assert (tmp_path / "errors.png").stat().st_size > 0
