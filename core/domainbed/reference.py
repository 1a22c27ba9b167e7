"""One run as DomainBed's ``scripts/train.py`` and ``algorithms.py`` write it: the check and the baseline of the stacked trainer.

An ``nn.Module`` (:class:`core.domainbed.model.MnistCNN`), ``torch.optim.Adam``
(weight decay 0), each training environment's minibatch concatenated into one
forward pass, and each algorithm's ``update`` as DomainBed writes it: ERM's
cross-entropy of the concatenation; IRM's penalty from
``autograd.grad(..., create_graph=True)`` of the dummy scale on the even and
odd halves; V-REx's risks written into a tensor and their population
variance; GroupDRO's per-environment ``predict`` and in-place weights; and a
new Adam at the anneal step. Accuracy is measured in minibatches of 64
(train.py's eval loaders). The data and minibatches are the stacked
trainer's (:mod:`core.domainbed.train`), so the two must agree to float
tolerance (tests/test_domainbed_train.py); MM-REx, ours, is written like V-REx.
"""
from __future__ import annotations

import torch
import torch.autograd as autograd
import torch.nn.functional as F

from core.domainbed.data import CHANNELS, NUM_CLASSES, BaseImages, environments, images_of
from core.domainbed.hparams import HOLDOUT_FRACTION, seed_hash
from core.domainbed.model import MnistCNN
from core.domainbed.train import Run, checkpoint_steps


def _irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    scale = torch.tensor(1.0, device=logits.device, dtype=logits.dtype).requires_grad_()
    loss_1 = F.cross_entropy(logits[::2] * scale, y[::2])
    loss_2 = F.cross_entropy(logits[1::2] * scale, y[1::2])
    grad_1 = autograd.grad(loss_1, [scale], create_graph=True)[0]
    grad_2 = autograd.grad(loss_2, [scale], create_graph=True)[0]
    return torch.sum(grad_1 * grad_2)


def reference_train(base: BaseImages, run: Run, *, steps: int, checkpoint_freq: int, width: float = 1.0,
                    holdout_fraction: float = HOLDOUT_FRACTION, device="cpu", dtype: torch.dtype = torch.float32) -> list[dict]:
    """Train one run like DomainBed's train.py; return the metrics of every checkpoint (as :func:`core.domainbed.train.train_block`)."""
    device = torch.device(device)
    envs = environments(base, run.seed, run.trial_seed, holdout_fraction)
    base = base.to(device)
    envs = [e.to(device) for e in envs]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        network = MnistCNN(CHANNELS[run.dataset], NUM_CLASSES[run.dataset], width)
    network.to(device, dtype)
    make_adam = lambda: torch.optim.Adam(network.parameters(), lr=run.lr, weight_decay=0.0)
    optimizer = make_adam()
    train = [envs[i] for i in run.train_envs()]
    generator = torch.Generator().manual_seed(seed_hash(run.seed, "minibatches"))
    q = torch.ones(len(train), device=device, dtype=dtype)
    checkpoints, out, vals = set(checkpoint_steps(steps, checkpoint_freq)), [], {"loss": [], "nll": [], "penalty": []}
    for step in range(steps):
        u = torch.rand(len(train), run.batch_size, generator=generator)
        minibatches = []
        for j, env in enumerate(train):
            drawn = (u[j] * len(env.in_keys)).long().to(device)
            positions = env.in_keys[drawn]
            minibatches.append((images_of(base, env, positions, dtype), env.y[positions]))
        penalty = torch.zeros(())
        if run.method == "erm":
            nll = loss = F.cross_entropy(network(torch.cat([x for x, _ in minibatches])), torch.cat([y for _, y in minibatches]))
        elif run.method == "groupdro":
            losses = torch.zeros(len(minibatches), device=device, dtype=dtype)
            for m, (x, y) in enumerate(minibatches):
                losses[m] = F.cross_entropy(network(x), y)
                q[m] *= (run.eta * losses[m].data).exp()
            q /= q.sum()
            loss = torch.dot(losses, q)
            nll = losses.mean()
        else:
            weight = run.penalty_weight if step >= run.anneal_iters else 1.0
            all_logits = network(torch.cat([x for x, _ in minibatches]))
            losses, irm, start = [], [], 0
            for x, y in minibatches:
                logits = all_logits[start:start + len(x)]
                start += len(x)
                losses.append(F.cross_entropy(logits, y))
                if run.method == "irm":
                    irm.append(_irm_penalty(logits, y))
            risks = torch.stack(losses)
            nll = risks.mean()
            if run.method == "irm":
                penalty = torch.stack(irm).mean()
            elif run.method == "vrex":
                penalty = ((risks - risks.mean()) ** 2).mean()
            else:  # mmrex (ours), V-REx's form with the MM-REx penalty
                m = len(risks)
                penalty = m / (m - 1) * (risks.max() - risks.mean()) if m > 1 else torch.zeros(())
            loss = nll + weight * penalty
            if step == run.anneal_iters:
                optimizer = make_adam()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for key, value in (("loss", loss), ("nll", nll), ("penalty", penalty)):
            vals[key].append(float(value.detach()))
        if step in checkpoints:
            out.append({"step": step, **{k: sum(v) / len(v) for k, v in vals.items()}, **accuracies(network, base, envs, dtype)})
            vals = {k: [] for k in vals}
    return out


def accuracies(network, base: BaseImages, envs, dtype) -> dict[str, float]:
    """``misc.accuracy`` of every environment's in- and out-split, in minibatches of 64 (train.py's eval loaders)."""
    row = {}
    network.eval()
    with torch.no_grad():
        for i, env in enumerate(envs):
            for split, keys in (("in", env.in_keys), ("out", env.out_keys)):
                correct = 0
                for start in range(0, len(keys), 64):
                    positions = keys[start:start + 64]
                    correct += int((network(images_of(base, env, positions, dtype)).argmax(1) == env.y[positions]).sum())
                row[f"env{i}_{split}_acc"] = correct / len(keys)
    network.train()
    return row
