"""core/flows/energies: U1..U9 equal torchkit/toy_energy.py's formulas at fixed points, written out by hand here;
log Z by quadrature converged (bayes.md §d.9 NAF 5)."""
import math

import pytest
import torch

from core.flows.energies import BOX, ENERGIES, log_z

POINTS = [(0.3, -1.2), (2.0, 0.1), (-1.7, 2.4), (0.0, 0.0), (4.5, -3.0)]


def sig(t):
    return 1 / (1 + math.exp(-t))


def lse(*v):
    m = max(v)
    return m + math.log(sum(math.exp(x - m) for x in v))


def hand(name: str, z1: float, z2: float) -> float:
    """toy_energy.py's U1..U9, one point, in plain floats."""
    r = math.hypot(z1, z2)
    if name == "U1":
        return -(0.5 * ((r - 2) / 0.4) ** 2 - math.log(math.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + math.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)))
    if name == "U2":
        e1 = 0.5 * ((math.sqrt(0.5 * z1 ** 2 + 0.5 * z2 ** 2) - 2) / 0.5) ** 2
        return -(e1 - lse(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * (math.sin(z1) / 0.5) ** 2, -0.5 * ((z1 + z2 + 2.5) / 0.6) ** 2))
    if name == "U3":
        return -(2 - math.sqrt(z1 ** 2 + 0.5 * z2 ** 2)) ** 2
    if name == "U4":  # N(2z; mean, 1.5 I) mixture, torchkit's log_normal with its 1e-5 in the denominator, + 2.5
        x1, x2 = 2 * z1, 2 * z2
        terms = []
        for (m1, m2), w in zip([(-5, 0), (5, 0), (0, 5), (0, -5)], [0.1, 0.3, 0.4, 0.2]):
            quad = ((x1 - m1) ** 2 + (x2 - m2) ** 2) / (2 * 1.5 + 1e-5)
            terms.append(-quad - math.log(1.5) - math.log(2 * math.pi) + math.log(w))
        return lse(*terms) + 2.5
    w1 = math.sin(0.5 * math.pi * z1)
    if name == "U5":
        return -0.5 * ((z2 - w1) / 0.4) ** 2 - 0.1 * z1 ** 2
    if name == "U6":
        w2 = 3 * math.exp(-0.5 * (z1 - 2) ** 2)
        return lse(-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + w2) / 0.35) ** 2) - 0.05 * z1 ** 2
    if name == "U7":
        c1 = math.cos(0.35 * math.pi * z1)
        w2 = 2 * math.exp(-0.2 * (2 * (z1 - 2)) ** 2)
        return lse(-0.5 * ((z2 - c1) / 0.35) ** 2, -0.5 * ((z2 - c1 + w2) / 0.35) ** 2) - 0.1 * (z1 - 2) ** 2
    w3 = 2.5 * sig((z1 - 2) / 0.3)
    pair = lse(-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    if name == "U8":
        return lse(pair - 0.05 * ((z1 - 2) ** 2 + (z2 + 3) ** 2), -2.5 * (z1 - 2) ** 2 - 2.5 * (z2 - 2) ** 2)
    u3 = hand("U3", 1.5 * z1 - 2, 1.5 * z2 - 2)
    return lse(pair - 0.05 * (z1 ** 2 + z2 ** 2), 2 * u3) - 1


@pytest.mark.parametrize("name", sorted(ENERGIES))
def test_energy_equals_the_hand_computed_formula(name):
    z = torch.tensor(POINTS, dtype=torch.float64)
    ours = ENERGIES[name](z)
    assert ours.shape == (len(POINTS),)
    for value, (z1, z2) in zip(ours.tolist(), POINTS):
        assert value == pytest.approx(hand(name, z1, z2), abs=1e-10, rel=1e-12)


def test_u1_and_u4_at_their_modes_by_hand():
    """U1 at (2, 0): ring term 0, lobes log(1 + e^{-0.5 (4/0.6)^2}). U4 at (0, 2.5) (2z on the 0.4-weight mean):
    log(0.4 / (2 pi 1.5)) (+ the other components, < 1e-7) + 2.5."""
    u1 = ENERGIES["U1"](torch.tensor([[2.0, 0.0]], dtype=torch.float64)).item()
    assert u1 == pytest.approx(math.log(1 + math.exp(-0.5 * (4 / 0.6) ** 2)), abs=1e-12)
    u4 = ENERGIES["U4"](torch.tensor([[0.0, 2.5]], dtype=torch.float64)).item()
    assert u4 == pytest.approx(math.log(0.4 / (2 * math.pi * 1.5)) + 2.5, abs=1e-6)


def test_energies_are_finite_far_out_in_float32():
    z = torch.tensor([[30.0, -30.0], [-12.0, 9.0]])
    for u in ENERGIES.values():
        assert torch.isfinite(u(z)).all()


def test_log_z_of_u4_is_exact():
    """U4 is a normalised mixture of N(2z; .), times e^2.5: Z = e^2.5 / 4 (up to torchkit's 1e-5 in the variance)."""
    assert log_z("U4") == pytest.approx(2.5 - math.log(4), abs=1e-5)


@pytest.mark.parametrize("name", ["U1", "U3", "U6", "U9"])
def test_log_z_converged(name):
    """The default grid and box against a finer grid on a wider box: within 1e-3 (U6/U9: the widest tails); and
    [-8, 8]^2 is not enough for U6's weak tail (the reason for BOX)."""
    assert abs(log_z(name) - log_z(name, grid=1600, box=1.5 * BOX[name])) < 1e-3
    if name == "U6":
        assert abs(log_z(name, box=8.0) - log_z(name)) > 5e-3
