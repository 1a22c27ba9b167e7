"""Every deliberate mistake in tests/mutations_*.py still finds its anchor: the old text occurs exactly once in its file.

The scripts are imported, not run (they edit files). A refactor that changes an anchored line fails here, not in the
next mutation run.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "tests").glob("mutations_*.py"))


def _mistakes(script: Path) -> list[tuple[str, str, str, str, list[str]]]:
    spec = importlib.util.spec_from_file_location(f"_anchors_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.M


CASES = [(script.name, mistake) for script in SCRIPTS for mistake in _mistakes(script)]


def test_every_script_has_mistakes():
    assert SCRIPTS and all(_mistakes(script) for script in SCRIPTS)


@pytest.mark.parametrize("script, mistake", CASES, ids=[f"{s}:{m[0]}" for s, m in CASES])
def test_anchor_occurs_exactly_once(script: str, mistake: tuple) -> None:
    name, path, old, new, tests = mistake
    text = (ROOT / path).read_text()
    assert text.count(old) == 1, f"{script} {name!r}: {path} holds its anchor {text.count(old)} times"
    assert old != new
    for target in tests:
        assert (ROOT / target.split("::")[0]).is_file(), f"{script} {name!r}: no test file {target}"
