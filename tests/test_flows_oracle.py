"""Library oracles for the transformers (extra ``flows``: pip install -e '.[flows]'; skipped without it, like ``rl``):
pyro's NeuralAutoregressive (one DSF layer) and zuko's MonotonicAffineTransform (MAF's affine), fed the same
parameters, give our y and log|det| (bayes.md §c, §d.9 NAF 3).

pyro's DSF differs from torchkit's in two documented places, undone here before the exact comparison: a =
softplus(.) with no + delta (we hand pyro softplus^-1(softplus(.) + delta)), and no delta squash before the logit
(ours is logit(x_sq), x_sq = x_pre (1 - delta) + delta/2, with log(1 - delta) - log x_sq(1 - x_sq) in place of
-log x_pre(1 - x_pre)); pyro adds 1e-8 to a inside its log. Raw outputs agree to 1e-5 where 0.06 < x_pre < 0.94 (the
squash moves y by ~ delta / 2 x_pre (1 - x_pre)); corrected: y to 1e-9, log|det| to 1e-6 (pyro's 1e-8 / a).
"""
import math

import pytest
import torch

from core.flows import transformers
from core.flows.spec import DELTA

pyro_transforms = pytest.importorskip("pyro.distributions.transforms", reason="pyro-ppl not installed: pip install -e '.[flows]'")
zuko = pytest.importorskip("zuko", reason="zuko not installed: pip install -e '.[flows]'")

pytestmark = pytest.mark.usefixtures("float64")  # float64 for exact log-dets, restored after each test


class FixedARN(torch.nn.Module):
    """Stands in for pyro's AutoRegressiveNN: returns given (A, W_pre, b), each (N, hidden_units, D)."""

    def __init__(self, a, w, b):
        super().__init__()
        self.out = (a, w, b)

    def forward(self, x):
        return self.out


def softplus_inv(y):
    return y + torch.log(-torch.expm1(-y))


def test_pyro_neural_autoregressive_equals_our_dsf():
    g = torch.Generator().manual_seed(0)
    n, dim, d = 200, 3, 8
    p = torch.randn(1, n, dim, 3 * d, generator=g) * torch.tensor([1.0] * d + [2.0] * d + [1.5] * d)
    x = 2 * torch.randn(1, n, dim, generator=g)
    y, logdet = transformers.sigmoid_flow(x, p)
    pa, b, pw = p[0, ..., :d], p[0, ..., d:2 * d], p[0, ..., 2 * d:]
    a_pre = softplus_inv(torch.nn.functional.softplus(pa) + DELTA)  # pyro: a = softplus(A), ours softplus(.) + delta
    naf = pyro_transforms.NeuralAutoregressive(FixedARN(*(t.transpose(-1, -2) for t in (a_pre, pw, b))), hidden_units=d)
    y_pyro = naf(x[0])
    ld_pyro = naf.log_abs_det_jacobian(x[0], y_pyro)
    x_pre = torch.sigmoid(y_pyro)
    inner = ((x_pre > 0.06) & (x_pre < 0.94)).all(-1)  # the squash moves y by ~ delta / (2 x_pre (1 - x_pre))
    assert inner.sum() > 50
    assert torch.allclose(y[0][inner], y_pyro[inner], atol=1e-5) and torch.allclose(logdet[0][inner], ld_pyro[inner], atol=1e-5)
    x_sq = x_pre * (1 - DELTA) + DELTA / 2
    assert torch.allclose(y[0], torch.log(x_sq) - torch.log1p(-x_sq), atol=1e-9, rtol=0)
    correction = (math.log(1 - DELTA) - torch.log(x_sq) - torch.log1p(-x_sq) + torch.log(x_pre) + torch.log1p(-x_pre)).sum(-1)
    assert torch.allclose(logdet[0], ld_pyro + correction, atol=1e-6, rtol=0)  # pyro's log(a + 1e-8): 1e-8 / a


def test_zuko_monotonic_affine_equals_our_maf_transformer():
    """zuko's f(x) = exp(a') x + b, a' = a / (1 + |a / log slope|), fed a = the pre-image of -alpha and b = -mu exp(-alpha)."""
    g = torch.Generator().manual_seed(1)
    out = torch.randn(1, 50, 4, 2, generator=g)
    x = torch.randn(1, 50, 4, generator=g)
    y, logdet = transformers.maf(x, out)
    mu, alpha = out[0, ..., 0], out[0, ..., 1]
    c = -math.log(1e-3)
    a = -alpha / (1 - alpha.abs() / c)
    t = zuko.transforms.MonotonicAffineTransform(-mu * torch.exp(-alpha), a, slope=1e-3)
    assert torch.allclose(t(x[0]), y[0], atol=1e-12)
    assert torch.allclose(t.log_abs_det_jacobian(x[0], t(x[0])).sum(-1), logdet[0], atol=1e-12)
