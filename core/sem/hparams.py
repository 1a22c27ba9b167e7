"""The toy SEMs' published values live here (the registry rule: each core part's in ``core/<part>/hparams.py``).

Presets, solver defaults and tests read these; nothing else writes a published
value down. Values: the IRM code's ``experiment_synthetic`` (and the REx
code's copy of it): Adam, and the grid of the reference's ERM share ``reg`` in
loss = reg * sum_e R_e + (1 - reg) * penalty, chosen on the validation domain.
"""
from __future__ import annotations

LR = 1e-3  # [lr], Adam
STEPS = 100_000  # [n_iterations]
REGS: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # [reg] grid
DIM = 10  # [dim]: inputs (causes + effects)
SAMPLES = 1000  # [n_samples] per domain
REPETITIONS = 10  # [n_reps]
