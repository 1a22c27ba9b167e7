"""CUDA variants of the core equality checks (``pytest -m gpu``; skipped without CUDA).

Run on a GPU machine by ``benchmarks/gpu_check.py`` (part "tests"), with TF32
off so that blocks and separate runs compute the same float32 products.
"""
import pytest
import torch

from core.cmnist import batched
from core.cmnist.domains import build_cmnist
from core.cmnist.train import train_block

from test_batched import CONFIGS as BATCHED_CONFIGS, EVAL, STEPS
from test_optim import check_batched_adam_equals_torch_adam

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")
CONFIGS = BATCHED_CONFIGS[:3]  # mixed widths, learning rates, L2, penalty weights and anneal steps


@pytest.fixture(scope="module")
def domains(digits):
    return build_cmnist(digits, seed=0)


def _close(a: dict, b: dict, what) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (what, key)


@pytest.mark.parametrize("method", ["erm", "irm", "vrex", "mmrex", "ri"])
def test_batched_block_on_cuda_equals_separate_runs(domains, method):
    with batched.tf32_mode(False):
        alone = [train_block(domains, method, [c], steps=STEPS, eval_every=EVAL, device=CUDA, batched=False, tf32=False)[0]
                 for c in CONFIGS]
        block = train_block(domains, method, CONFIGS, steps=STEPS, eval_every=EVAL, device=CUDA, batched=True, tf32=False)
    for i, (together, own) in enumerate(zip(block, alone)):
        _close(together, own, (method, i))


def test_cuda_block_equals_the_cpu_block(domains):
    with batched.tf32_mode(False):
        gpu = train_block(domains, "irm", CONFIGS, steps=STEPS, eval_every=EVAL, device=CUDA, batched=True, tf32=False)
    cpu = train_block(domains, "irm", CONFIGS, steps=STEPS, eval_every=EVAL, device=torch.device("cpu"), batched=True)
    for i, (a, b) in enumerate(zip(gpu, cpu)):
        _close(a, b, i)


def test_batched_adam_on_cuda_equals_torch_adam():
    check_batched_adam_equals_torch_adam(CUDA, exact=False)  # torch.optim.Adam on CUDA (foreach kernels) rounds in another order


def test_block_over_the_cuda_memory_budget_is_split_with_equal_results(domains):
    n = sum(len(d.y) for d in domains.train)
    budget = batched.activation_bytes(1, n, 40)  # one model per sub-block
    assert batched.plan_block([c.hidden for c in CONFIGS], n, "pad", budget) == [[0], [1], [2]]
    with batched.tf32_mode(False):
        whole = train_block(domains, "vrex", CONFIGS, steps=STEPS, eval_every=EVAL, device=CUDA, batched=True, tf32=False)
        split = train_block(domains, "vrex", CONFIGS, steps=STEPS, eval_every=EVAL, device=CUDA, batched=True, tf32=False,
                            memory_bytes=budget)
    for i, (a, b) in enumerate(zip(whole, split)):
        _close(a, b, i)
