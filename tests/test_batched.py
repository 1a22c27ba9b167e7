"""Batched blocks (core.cmnist.batched): equal to separate runs, the loop's Adam equal to torch.optim.Adam, blocks split to fit memory."""
import pytest
import torch

from core import methods
from core.cmnist import batched
from core.cmnist import models
from core.cmnist.domains import build_cmnist
from core.cmnist.shift import build_shifted_cmnist
from core.cmnist.train import LoopModels, ModelConfig, train_block, use_batched

CPU = torch.device("cpu")
# Mixed widths (16 pads to 16, 21 to 24, 40 to 40, 9 to 16), learning rates, L2 and penalty weights, anneal steps
# on both sides of the 8 steps, seeds.
CONFIGS = [
    ModelConfig(hidden=16, l2=0.001, lr=0.002, anneal_iters=3, penalty_weight=50.0, seed=1),
    ModelConfig(hidden=40, l2=0.0001, lr=0.0005, anneal_iters=6, penalty_weight=1000.0, seed=2),
    ModelConfig(hidden=21, l2=0.01, lr=0.001, anneal_iters=2, penalty_weight=0.5, seed=3),
    ModelConfig(hidden=9, l2=0.003, lr=0.003, anneal_iters=20, penalty_weight=10.0, seed=4),
]
STEPS, EVAL = 8, 3


@pytest.fixture(scope="module")
def domains(digits):
    return build_cmnist(digits, seed=0)


_ALONE: dict = {}


def _alone(domains, method, **kw):
    """Each configuration trained alone on the loop path: its final row and its eval rows (cached per method)."""
    key = (id(domains), method, tuple(sorted(kw.items())))
    if key not in _ALONE:
        _ALONE[key] = _train_alone(domains, method, **kw)
    return _ALONE[key]


def _train_alone(domains, method, **kw):
    finals, curves = [], []
    for config in CONFIGS:
        seen = []
        finals.append(train_block(domains, method, [config], steps=STEPS, eval_every=EVAL, device=CPU, batched=False,
                                  on_eval=lambda s, rows, seen=seen: seen.append(rows[0]), **kw)[0])
        curves.append(seen)
    return finals, curves


def _assert_rows_equal(together, alone, what):
    assert together.keys() == alone.keys()
    for key in together:
        assert together[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-5), (what, key)


@pytest.mark.parametrize("grouping", ["pad", "width"])
@pytest.mark.parametrize("method", methods.names())
def test_batched_block_equals_separate_runs(domains, method, grouping):
    # Every registry method (input "full", and the grayscale oracle), the block's eval rows at every eval step too.
    finals, curves = _alone(domains, method)
    seen = []
    block = train_block(domains, method, CONFIGS, steps=STEPS, eval_every=EVAL, device=CPU, batched=True, grouping=grouping,
                        on_eval=lambda s, rows: seen.append(rows))
    assert [len(rows) for rows in seen] == [len(CONFIGS)] * 4  # steps 0, 3, 6, 7
    for i, (together, alone) in enumerate(zip(block, finals)):
        _assert_rows_equal(together, alone, (method, grouping, i))
        for rows, alone_row in zip(seen, curves[i]):
            _assert_rows_equal(rows[i], alone_row, (method, grouping, i, "curve"))


def test_bucketed_block_equals_separate_runs(domains):
    finals, _ = _alone(domains, "irm")
    block = train_block(domains, "irm", CONFIGS, steps=STEPS, eval_every=EVAL, device=CPU, batched=True, grouping="bucket")
    assert batched.plan_block([c.hidden for c in CONFIGS], 1, "bucket", None) == [[0, 3], [1], [2]]
    for i, (together, alone) in enumerate(zip(block, finals)):
        _assert_rows_equal(together, alone, i)


def test_batched_four_channel_variant_equals_separate_runs(digits):
    # Colour imbalance: 4 channels, the channel form's first layer per segment in the batched products too.
    shifted = build_shifted_cmnist(digits, "color", 0.2, seed=1)
    finals, _ = _alone(shifted, "irm", reduction="sum")
    block = train_block(shifted, "irm", CONFIGS, steps=STEPS, eval_every=EVAL, device=CPU, batched=True, reduction="sum")
    for i, (together, alone) in enumerate(zip(block, finals)):
        _assert_rows_equal(together, alone, i)


def test_stacked_models_start_from_init_model_and_padding_stays_zero(domains):
    hiddens, seeds = [c.hidden for c in CONFIGS], [c.seed for c in CONFIGS]
    stacked = batched.StackedModels(392, hiddens, seeds, [c.lr for c in CONFIGS], CPU)
    width = models.padded_width(max(hiddens))
    assert stacked.params[0].shape == (4, 392, width) and stacked.params[2].shape == (4, width, width)
    for params, h, s in zip(stacked.unstacked(), hiddens, seeds):
        own = models.init_model(392, h, s)
        assert torch.equal(params[0][:, :h], own[0]) and torch.equal(params[2][:h, :h], own[2])
        assert torch.equal(params[4][:h], own[4])
    # A few training steps on the batched path leave every unit beyond a model's own width exactly zero.
    from core.cmnist.train import batch_inputs
    x, ys = batch_inputs(domains.train, False, CPU)
    y = torch.cat(ys)
    for _ in range(3):
        logits = stacked.forward(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean((1, 2))
        loss = loss + 0.01 * stacked.squared_norm()
        stacked.update(torch.autograd.grad(loss.sum(), stacked.params))
    for params, h in zip(stacked.unstacked(), hiddens):
        w1, b1, w2, b2, w3, _ = params
        assert w1[:, h:].abs().sum() == 0 and b1[:, h:].abs().sum() == 0 and b2[:, h:].abs().sum() == 0
        assert w2[h:].abs().sum() == 0 and w2[:, h:].abs().sum() == 0 and w3[h:].abs().sum() == 0
        assert w1[:, :h].abs().sum() > 0


def test_loop_adam_equals_torch_adam():
    # Two models of different widths and learning rates, each updated exactly as by a torch.optim.Adam of its own.
    gen = torch.Generator().manual_seed(1)
    loop = LoopModels(6, [8, 5], [0, 1], [0.01, 0.003], CPU)
    alone = [[p.detach().clone().requires_grad_() for p in params] for params in loop.models]
    optimizers = [torch.optim.Adam(params, lr=lr) for params, lr in zip(alone, [0.01, 0.003])]
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in loop.params]
        loop.update(grads)
        for p, g in zip([p for params in alone for p in params], grads):
            p.grad = g.clone()
        for optimizer in optimizers:
            optimizer.step()
    for p, q in zip(loop.params, [p for params in alone for p in params]):
        assert torch.equal(p.detach(), q.detach())


def test_memory_estimate_and_split():
    n = 50_000
    assert batched.activation_bytes(8, n, 392) == int(8 * n * 392 * 4 * batched.ACTIVATION_FACTOR)
    widths = [390, 64, 500, 100]
    budget = batched.activation_bytes(2, n, 504)
    plan = batched.plan_block(widths, n, "pad", budget)
    assert plan == [[0, 1], [2, 3]]
    assert [i for sub in plan for i in sub] == [0, 1, 2, 3]
    assert batched.plan_block(widths, n, "pad", None) == [[0, 1, 2, 3]]
    assert batched.plan_block(widths, n, "width", None) == [[0], [1], [2], [3]]
    assert batched.plan_block([64, 60, 64, 200], n, "width", None) == [[0, 1, 2], [3]]
    # Buckets: sorted padded widths 64, 64, 72, 96, 104, 392, cut where a width passes 1.25x the bucket's narrowest.
    assert batched.plan_block([390, 64, 100, 72, 60, 96], n, "bucket", None) == [[0], [1, 3, 4], [2, 5]]
    with pytest.raises(ValueError, match="grouping"):
        batched.group_by_width([8], "nope")
    # A model over the budget on its own still runs, alone.
    assert batched.plan_block(widths, n, "pad", 1) == [[0], [1], [2], [3]]


@pytest.mark.parametrize("stacked", [True, False])
def test_block_over_the_memory_budget_is_split_not_crashed(domains, stacked):
    n = sum(len(d.y) for d in domains.train)
    budget = batched.activation_bytes(2, n, 40)  # two models of width <= 40 per sub-block
    assert batched.plan_block([c.hidden for c in CONFIGS], n, "pad", budget) == [[0, 1], [2, 3]]
    seen_whole, seen_split = [], []
    whole = train_block(domains, "vrex", CONFIGS, steps=STEPS, eval_every=EVAL, device=CPU, batched=stacked,
                        on_eval=lambda s, rows: seen_whole.append((s, rows)))
    split = train_block(domains, "vrex", CONFIGS, steps=STEPS, eval_every=EVAL, device=CPU, batched=stacked, memory_bytes=budget,
                        on_eval=lambda s, rows: seen_split.append((s, rows)))
    assert [s for s, _ in seen_split] == [s for s, _ in seen_whole] == [0, 3, 6, 7]
    for (_, rows_a), (_, rows_b) in zip(seen_whole, seen_split):
        assert len(rows_a) == len(rows_b) == len(CONFIGS)
        for i, (a, b) in enumerate(zip(rows_a, rows_b)):
            _assert_rows_equal(a, b, i)
    for i, (a, b) in enumerate(zip(whole, split)):
        _assert_rows_equal(a, b, i)


def test_batched_path_choice_and_tf32_setting():
    assert use_batched(8, CPU) is False and use_batched(8, torch.device("cuda")) is True
    assert use_batched(1, torch.device("cuda")) is False and use_batched(1, CPU, True) is True
    assert batched.tf32_enabled(CPU) is False and batched.tf32_enabled(CPU, True) is False
    assert batched.tf32_enabled(torch.device("cuda")) is True and batched.tf32_enabled(torch.device("cuda"), False) is False
    before = torch.backends.cuda.matmul.allow_tf32
    with batched.tf32_mode(not before):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before


def test_trainable_records_tf32_caches_domains_per_device_and_splits_by_block_memory_gb(digits):
    from tasks.cmnist import CPU_BLOCK_MEMORY_GB, domains_for, memory_budget_bytes, run_cmnist

    base = dict(method="irm", steps=3, eval_every=2, data_seed=0, variant="standard", risk_reduction="mean",
                block=[dict(hidden=16, seed=1), dict(hidden=24, seed=2, lr=0.002), dict(hidden=8, seed=3)])
    assert domains_for(digits, base, "cpu") is domains_for(digits, base, torch.device("cpu"))
    reports = []
    whole = run_cmnist(base, digits, reports.append)
    assert [r.step for r in reports] == [0, 2] and all(len(r.metrics) == 3 for r in reports)
    assert all(row["tf32"] is False for r in reports for row in r.metrics) and all(row["tf32"] is False for row in whole)
    assert memory_budget_bytes({"block_memory_gb": 2}, "cpu") == 2 * 2**30
    assert memory_budget_bytes({}, "cpu") == memory_budget_bytes({"block_memory_gb": 0.0}, "cpu") == CPU_BLOCK_MEMORY_GB * 2**30
    for path in (None, True):  # a budget below one model: every model its own sub-block, same numbers
        split = run_cmnist(dict(base, block_memory_gb=1e-9, batched=path), digits, lambda r: None)
        for i, (a, b) in enumerate(zip(whole, split)):
            _assert_rows_equal(a, b, (path, i))


def test_rex_vs_irm_block_memory_setting_reaches_the_configs_only_when_set():
    from pipelines.rex import rex_vs_irm
    from pipelines.engine.spec import resolve_settings

    base = ["variants=class", "ps=0.1", "methods=irm"]
    for extra, expected in (([], None), (["block_memory_gb=2.5"], 2.5)):
        fixed, search = rex_vs_irm.stages(resolve_settings(rex_vs_irm.PIPELINE, "smoke", base + extra))
        configs = list(fixed.plan.configs) + list(search.plan.studies)
        assert configs and all(c.get("block_memory_gb") == expected for c in configs)
