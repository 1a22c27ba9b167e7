"""Seeds derived from one run seed (numpy only, so the agent imports without the simulators)."""
from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for (seed, keys...), e.g. one per domain."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])
