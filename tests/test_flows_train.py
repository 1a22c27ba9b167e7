"""core/flows/train.fit: equal to a loop written like NAF's maf_experiments.py at K = 1 (step for step, Polyak and
early stopping included), a block equal to its configurations trained alone, per-model clipping and freezing
(bayes.md §d.9 NAF 4)."""
import itertools

import pytest
import torch

from core.flows import model, reference, train
from core.flows.spec import FlowSpec

pytestmark = pytest.mark.usefixtures("float64")  # float64 for exact log-dets, restored after each test

SPEC = FlowSpec(dim=2, transformer="dsf", flows=2, hidden=8, ds_dim=3)


def mog(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    return centres[torch.randint(0, 3, (n,), generator=g)] + 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)


TRAIN, VALID = mog(250, 0), mog(100, 1)


def fit_like_reference(seeds, lrs, epochs, polyak, patience, clip, shuffle_seed=0):
    """fit on the reference's minibatch schedule (the same generator draws the same permutations)."""
    gen = torch.Generator().manual_seed(shuffle_seed)
    batches = [reference.epoch_batches(len(TRAIN), 100, gen) for _ in range(epochs)]
    per_epoch = len(batches[0])
    flat = list(itertools.chain(*batches))
    params = model.init_block(SPEC, seeds, dtype=torch.float64)
    seen = []

    def loss_fn(step):
        losses = -model.log_prob(SPEC, params, TRAIN[flat[step]]).mean(1)
        seen.append(losses.detach().clone())
        return losses
    res = train.fit(params, loss_fn, steps=len(flat), lr=lrs, clip=clip, polyak=polyak,
                    eval_fn=lambda: -model.log_prob(SPEC, params, VALID).mean(1), eval_every=per_epoch, patience=patience)
    return res, torch.stack(seen), params


def test_fit_at_k1_equals_the_reference_loop_step_for_step():
    epochs, lr, polyak, patience, clip = 12, 0.05, 0.7, 1, 1.0
    ref = reference.train_reference(SPEC, 3, TRAIN, VALID, epochs=epochs, lr=lr, clip=clip, polyak=polyak, patience=patience)
    assert 2 < ref.epochs < epochs  # early stopping happened, after some progress
    res, seen, _ = fit_like_reference([3], lr, epochs, polyak, patience, clip)
    assert bool(res.stopped[0])
    assert len(seen) == len(ref.train_losses)
    assert torch.allclose(seen[:, 0], torch.tensor(ref.train_losses), atol=1e-10, rtol=0)
    assert torch.allclose(torch.stack([m for _, m in res.history])[:, 0], torch.tensor(ref.val_losses), atol=1e-10, rtol=0)
    assert abs(res.best_metric[0].item() - ref.best_val) < 1e-10
    assert all(torch.allclose(a, b, atol=1e-10, rtol=0) for a, b in zip(res.best_params, ref.best_params))


def test_fit_without_polyak_equals_the_reference_too():
    ref = reference.train_reference(SPEC, 4, TRAIN, VALID, epochs=3, lr=0.01, clip=5.0, polyak=0.0, patience=30)
    res, seen, params = fit_like_reference([4], 0.01, 3, 0.0, 30, 5.0)
    assert torch.allclose(seen[:, 0], torch.tensor(ref.train_losses), atol=1e-10, rtol=0)
    assert all(torch.allclose(a, b, atol=1e-10, rtol=0) for a, b in zip(res.best_params, ref.best_params))


def test_block_equals_each_configuration_trained_alone():
    """Three seeds and learning rates in one block (some stop early) = each trained alone."""
    seeds, lrs = [5, 6, 7], [0.05, 0.02, 0.004]
    block, seen, params = fit_like_reference(seeds, lrs, 8, 0.5, 1, 1.0)
    assert block.stopped.tolist() == [False, True, False]  # the middle one stops early, the others run on
    for k, (seed, lr) in enumerate(zip(seeds, lrs)):
        alone, seen_1, params_1 = fit_like_reference([seed], lr, 8, 0.5, 1, 1.0)
        steps = int(alone.steps_done[0])
        assert steps == int(block.steps_done[k])
        assert torch.allclose(seen[:steps, k], seen_1[:steps, 0], atol=1e-9, rtol=0)
        assert abs(block.best_metric[k].item() - alone.best_metric[0].item()) < 1e-9
        assert all(torch.allclose(a[k], b[0], atol=1e-9, rtol=0) for a, b in zip(block.best_params, alone.best_params))
        assert all(torch.allclose(a[k], b[0], atol=1e-9, rtol=0) for a, b in zip(params, params_1))  # frozen after stopping


def test_clip_per_model_uses_each_models_own_norm():
    g1 = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # model 0 norm 5*sqrt(2) over both tensors, model 1 small
    g2 = torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]])
    norms = train.clip_per_model([g1, g2], 5.0)
    assert torch.allclose(norms, torch.tensor([50 ** 0.5, 0.5]))
    assert abs(torch.cat([g1[0], g2[0, 0]]).norm().item() - 5.0) < 1e-5
    assert torch.equal(g1[1], torch.tensor([0.3, 0.4]))


def test_stopped_model_is_frozen_and_keeps_its_best():
    """Model 1's metric never improves after the first evaluation: it stops after patience + 1 more and stays put."""
    w = torch.zeros(2, 3, requires_grad=True)
    evals = iter(range(100))

    def eval_fn():
        i = next(evals)
        return torch.tensor([-float(i), 0.0 if i == 0 else 1.0])
    res = train.fit([w], lambda step: ((w - 1.0) ** 2).sum(1), steps=20, lr=0.1, eval_fn=eval_fn, eval_every=2, patience=2)
    assert res.stopped.tolist() == [False, True]
    assert res.steps_done.tolist() == [20, 8]  # evaluations after steps 2, 4, 6, 8: 3 without improvement > 2
    assert res.best_step.tolist() == [19, 1]
    ref = torch.zeros(3, requires_grad=True)  # model 1 alone, 8 steps; model 1's best is its weights after 2 steps
    opt = torch.optim.Adam([ref], lr=0.1)
    after = []
    for _ in range(8):
        opt.zero_grad()
        ((ref - 1.0) ** 2).sum().backward()
        opt.step()
        after.append(ref.detach().clone())
    assert torch.allclose(w[1], after[-1]) and torch.allclose(res.best_params[0][1], after[1])


def test_polyak_average_is_what_gets_evaluated():
    """With polyak, eval_fn sees avg = polyak avg + (1 - polyak) p (from zeros); after fit the raw weights are back."""
    w = torch.zeros(1, 2, requires_grad=True)
    raw, seen = [], []
    res = train.fit([w], lambda step: ((w - 1.0) ** 2).sum(1), steps=3, lr=0.1, polyak=0.5,
                    eval_fn=lambda: seen.append(w.detach().clone()) or torch.zeros(1), eval_every=1,
                    on_eval=lambda step, m: raw.append(w.detach().clone()))
    avg = torch.zeros(1, 2)
    for r, s in zip(raw, seen):
        avg = 0.5 * avg + 0.5 * r
        assert torch.allclose(s, avg)
    assert torch.equal(w.detach(), raw[-1]) and torch.allclose(res.best_params[0], seen[0])
