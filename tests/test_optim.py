"""core.optim.BatchedAdam: each model of a stacked block updated exactly as by a torch.optim.Adam of its own."""
from __future__ import annotations

import pytest
import torch

from core.optim import ADAM_BETAS, ADAM_EPS, BatchedAdam

CPU = torch.device("cpu")
SHAPES = [(5, 7), (1, 7), (7,), (2, 3, 2, 2)]  # per-model shapes: matrices, a row, a vector, a conv kernel


def _stacked(k: int, dtype: torch.dtype, device: torch.device, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(k, *shape, generator=gen, dtype=dtype).to(device).requires_grad_() for shape in SHAPES]


def _grads(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """Gradients of mixed scales (1e-3 .. 10) so that eps and the bias corrections both matter."""
    return [(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 10 ** float(torch.randint(-3, 2, (), generator=gen))).to(p.device)
            for p in params]


def _torch_adams(stacked: list[torch.Tensor], lrs: list[float]) -> tuple[list[list[torch.Tensor]], list[torch.optim.Adam]]:
    alone = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(len(lrs))]
    return alone, [torch.optim.Adam(params, lr=lr) for params, lr in zip(alone, lrs)]


def _torch_step(params: list[torch.Tensor], optimizer: torch.optim.Adam, grads: list[torch.Tensor], i: int) -> None:
    for p, g in zip(params, grads):
        p.grad = g[i].clone()
    optimizer.step()


def _assert_model_equal(stacked: list[torch.Tensor], i: int, alone: list[torch.Tensor], exact: bool, what) -> None:
    for p, q in zip(stacked, alone):
        if exact:
            assert torch.equal(p[i].detach(), q.detach()), what
        else:
            torch.testing.assert_close(p[i].detach(), q.detach(), rtol=1e-6, atol=1e-7, msg=str(what))


def check_batched_adam_equals_torch_adam(device: torch.device, dtype: torch.dtype = torch.float32, k: int = 5,
                                         steps: int = 6, exact: bool = True) -> None:
    """BatchedAdam over K stacked tensors equals K torch.optim.Adam, one per model and learning rate, after every step."""
    gen = torch.Generator().manual_seed(k * 100 + steps)
    lrs = [1e-3, 3e-2, 2e-4, 5e-3, 1e-1][:k]
    stacked = _stacked(k, dtype, device, gen)
    ours = BatchedAdam(stacked, lrs)
    alone, theirs = _torch_adams(stacked, lrs)
    for step in range(steps):
        grads = _grads(stacked, gen)
        ours.step(grads)
        for i, optimizer in enumerate(theirs):
            _torch_step(alone[i], optimizer, grads, i)
            _assert_model_equal(stacked, i, alone[i], exact, (step, i))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 5])
def test_each_model_equals_its_own_torch_adam_bit_for_bit(k, dtype):
    # 150 steps: past the bias-correction table's first size (64), and float64 K = 5 is where torch's vectorised
    # pow of a step-count tensor differs in the last bit from the Python pow torch.optim.Adam uses.
    check_batched_adam_equals_torch_adam(CPU, dtype, k=k, steps=150)


def test_defaults_are_torch_adams_and_parameters_default_to_their_grad():
    assert (ADAM_BETAS, ADAM_EPS) == (torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults["betas"], 1e-8)
    gen = torch.Generator().manual_seed(3)
    stacked = _stacked(2, torch.float32, CPU, gen)
    ours = BatchedAdam(stacked, 0.01)  # one lr for every model
    alone, theirs = _torch_adams(stacked, [0.01, 0.01])
    for _ in range(3):
        grads = _grads(stacked, gen)
        for p, g in zip(stacked, grads):
            p.grad = g
        ours.step()
        for i in range(2):
            _torch_step(alone[i], theirs[i], grads, i)
    for i in range(2):
        _assert_model_equal(stacked, i, alone[i], True, i)


def test_paused_models_are_untouched_and_resume_with_their_own_step_count():
    gen = torch.Generator().manual_seed(1)
    k, lrs = 3, [1e-2, 3e-3, 5e-2]
    stacked = _stacked(k, torch.float32, CPU, gen)
    ours = BatchedAdam(stacked, lrs)
    alone, theirs = _torch_adams(stacked, lrs)
    # Model 0 always steps; model 1 pauses from the start (never stepped) then resumes; model 2 pauses midway.
    schedule = [[True, False, True], [True, False, True], [True, True, False], [True, False, False], [True, True, True],
                [True, True, True], [False, False, True]]
    for step, row in enumerate(schedule):
        active = torch.tensor(row)
        grads = _grads(stacked, gen)
        for g in grads:
            g[~active] = float("nan")  # what a paused (diverged) model's gradients may be
        before = [(p.detach().clone(), m.clone(), v.clone()) for p, m, v in zip(stacked, ours.m, ours.v)]
        ours.step(grads, active=active)
        for i, on in enumerate(row):
            if on:
                _torch_step(alone[i], theirs[i], grads, i)
            else:
                for (p0, m0, v0), p, m, v in zip(before, stacked, ours.m, ours.v):
                    assert torch.equal(p[i], p0[i]) and torch.equal(m[i], m0[i]) and torch.equal(v[i], v0[i]), (step, i)
            _assert_model_equal(stacked, i, alone[i], True, (step, i))
    assert ours.steps.tolist() == [6, 3, 5]
    assert [int(o.state[alone[i][0]]["step"]) for i, o in enumerate(theirs)] == ours.steps.tolist()


def test_reset_equals_a_recreated_torch_adam():
    gen = torch.Generator().manual_seed(2)
    k, lrs = 3, [1e-2, 3e-3, 5e-2]
    stacked = _stacked(k, torch.float64, CPU, gen)
    ours = BatchedAdam(stacked, lrs)
    alone, theirs = _torch_adams(stacked, lrs)
    for step in range(8):
        if step == 4:  # restart model 1 only (DomainBed's IRM / V-REx at their anneal step)
            ours.reset(torch.tensor([False, True, False]))
            theirs[1] = torch.optim.Adam(alone[1], lr=lrs[1])
            assert ours.steps.tolist() == [4, 0, 4] and all(float(m[1].abs().sum()) == 0 for m in ours.m + ours.v)
        grads = _grads(stacked, gen)
        ours.step(grads)
        for i in range(k):
            _torch_step(alone[i], theirs[i], grads, i)
            _assert_model_equal(stacked, i, alone[i], True, (step, i))
