"""One figure path: pipelines.engine.reports.figure / save_figure (Agg), used by every report and benchmark."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.engine import reports

ROOT = Path(__file__).resolve().parents[1]


def test_save_figure_writes_the_png_in_new_folders_and_closes_the_figure(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    fig, axes = reports.figure(1, 2, figsize=(3, 2), squeeze=False)
    assert matplotlib.get_backend().lower() == "agg" and axes.shape == (1, 2)
    axes[0][0].plot([0, 1], [1, 0])
    path = tmp_path / "a" / "b" / "plot.png"
    reports.save_figure(fig, str(path), dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.imread(path).shape[:2] == (100, 150)  # figsize x dpi
    assert fig.number not in plt.get_fignums()


@pytest.mark.parametrize("folder", ["pipelines", "benchmarks"])
def test_nothing_else_draws_or_saves_figures_by_itself(folder):
    home = ROOT / "pipelines" / "engine" / "reports.py"
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / folder).rglob("*.py")) if p != home
                 and any(word in p.read_text() for word in ("pyplot", "savefig", "_pyplot", "matplotlib.use"))]
    assert offenders == []
