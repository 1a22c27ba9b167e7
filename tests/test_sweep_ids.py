"""Golden sweep ids and trial keys: refactors and moved defaults must not rename recorded sweeps or trials.

For every registered pipeline and preset this computes the sweep id as the
runner does (``sweep_id(name, preset, settings, data.fingerprint,
all_settings())``) and, for each stage planned without earlier results, the
trial keys the runner would name: every configuration of a grid, the first
block a search's searcher hands out. Presets whose data needs ``--data-dir``
get a stand-in fingerprint (their settings still reach the id). No Ray runtime
starts. A deliberate change (a corrected published value) updates the table,
and a new pipeline or preset is pinned by adding its entry:
``python tests/test_sweep_ids.py`` prints the table.

Updated once on purpose: the embedded data sets were made the same on every CPU
(their float32 resampling had rounded differently on AVX2 and AVX-512), so every
preset on embedded digits got a new fingerprint, sweep id and trial keys.
"""
from __future__ import annotations

import functools
import hashlib

import pytest

from core.data import DataError
from pipelines.engine.spec import Grid, resolve_settings, sweep_id, trial_key
from pipelines.registry import pipelines
from tasks.report import configurations

NEEDS_DATA_DIR = "needs-data-dir"  # the stand-in fingerprint of presets that read real data files

# "pipeline/preset": (sweep id, {stage: (number of trial keys, sha1 of the keys joined by commas, first 12 hex)})
GOLDEN: dict[str, tuple[str, dict[str, tuple[int, str]]]] = {
    'cmnist-table/smoke': ('smoke-0a1c684f1e', {'table': (12, 'e821d4cf7d3c')}),
    'cmnist-table/paper': ('paper-9ece4883cf', {'table': (60, '51b22096d67e')}),
    'cmnist-search/smoke': ('smoke-9e273ed464', {'search': (1, '0d23e28beb9e')}),
    'cmnist-search/paper': ('paper-32a7a6e357', {'search': (1, 'a335188ac674')}),
    'rex-vs-irm/smoke': ('smoke-b5d1e862e5', {'fixed': (72, '154a6b9a797f'), 'search': (4, '22164a3f894d')}),
    'rex-vs-irm/cpu': ('cpu-61a8158e07', {'fixed': (180, '7d59860155d3'), 'search': (8, '27856ae7c8d9')}),
    'rex-vs-irm/paper': ('paper-1c5de08c19', {'fixed': (216, 'd617045b3eeb'), 'search': (8, '84e517c7224b')}),
    'toy-sem/smoke': ('smoke-df14a75bae', {'grid': (64, '5bec2c00d1fd')}),
    'toy-sem/paper': ('paper-119b6a6ac5', {'grid': (320, '1a132d9952bf')}),
    'rl-spurious/smoke': ('smoke-05138f098b', {'runs': (4, 'd2e4039d2105')}),
    'rl-spurious/paper': ('paper-9e8cb36f0f', {'tune': (1, '628ad36af0bb')}),
    'rl-spurious/learn': ('learn-07ff1518df', {'runs': (2, 'f7579196a99f')}),
    'rl-spurious/study': ('study-e59dcbfa23', {'runs': (8, 'b2e754d3f559')}),
    'domainbed/smoke': ('smoke-492e252a05', {'ColoredMNIST': (6, '8090ed0cbfc7'), 'RotatedMNIST': (6, '2458a8176b56')}),
    'domainbed/mnist': ('mnist-b16f030beb', {'ColoredMNIST': (6, '23e2fa73b373')}),
    'domainbed/paper': ('paper-07cfebddea', {'ColoredMNIST': (6, '9cff2034645d'), 'RotatedMNIST': (21, 'b1074b4b2e5c')}),
    'memorization-regularizers/smoke': ('smoke-586811d823', {'models': (24, '660f41b28913')}),
    'memorization-regularizers/paper': ('paper-c888c8a422', {'models': (68, 'e03deefc3ed8')}),
    'memorization-regularizers/mnist': ('mnist-dc5d9fc4ca', {'models': (80, 'b500b8607d29')}),
    'memorization-csr/smoke': ('smoke-bf13a62408', {'training': (5, '2582690602b2')}),
    'memorization-csr/paper': ('paper-9d9091da96', {'training': (33, '16d44c3b441d')}),
    'memorization-csr/mnist': ('mnist-cdef27737c', {'training': (21, '42715b0a4a52')}),
    'memorization-csr/cifar10': ('cifar10-bc71396494', {'training': (27, 'b60f50655c82')}),
    'memorization-csr/cifar10-random': ('cifar10-random-df04be4b14', {'training': (9, '358208cf617b')}),
    'memorization-easy/smoke': ('smoke-d7f4fb9f70', {'runs': (300, '3676f6b047c5')}),
    'memorization-easy/paper': ('paper-2c5c5b2ca3', {'runs': (300, 'f7f7bdc63fd4')}),
    'memorization-easy/mnist': ('mnist-2c5c5b2ca3', {'runs': (300, 'f7f7bdc63fd4')}),
    'memorization-sensitivity/smoke': ('smoke-9983261f35', {'sensitivity': (8, '17fdefac1c82')}),
    'memorization-sensitivity/paper': ('paper-a3b880184b', {'sensitivity': (20, 'db669247c282')}),
    'memorization-sensitivity/mnist': ('mnist-fa014216a9', {'sensitivity': (12, '453e042b116b')}),
    'memorization-capacity/smoke': ('smoke-204e521ebf', {'runs': (54, '5aaf901f2c52')}),
    'memorization-capacity/paper': ('paper-654b567617', {'runs': (150, '2bebd3258ad7')}),
    'memorization-capacity/mnist': ('mnist-9b8b4842de', {'runs': (42, '3f61be723ab2')}),
    # the naf study, pinned when it landed (issue 30), not from d77c172
    'naf-toy/smoke': ('smoke-3ea077e21b', {'fits': (16, '6b43ca5f3f00')}),
    'naf-toy/cpu': ('cpu-ac9d7982f0', {'fits': (96, 'e23198621336')}),
    'naf-toy/paper': ('paper-86192beb59', {'fits': (260, '5c7bccaf491d')}),
    'naf-sinewave/smoke': ('smoke-83e65f9f2a', {'fits': (4, 'f9fa18199b20')}),
    'naf-sinewave/cpu': ('cpu-c43db45f04', {'fits': (20, 'e005f630d25d')}),
    'naf-sinewave/paper': ('paper-c43db45f04', {'fits': (20, 'e005f630d25d')}),
    'naf-tabular/smoke': ('smoke-9df047248b', {'fits': (6, 'b056695632bb')}),
    'naf-tabular/cpu': ('cpu-240432bbc6', {'fits': (30, 'f3e43bd0f18f')}),
    'naf-tabular/paper': ('paper-923054b35c', {'fits': (200, '4c98e2ba0318')}),
    'naf-vae/smoke': ('smoke-5cfe6ef9f0', {'fits': (3, '49f77e1d110f')}),
    'naf-vae/cpu': ('cpu-132f67b409', {'fits': (8, '54788e2fcd2e')}),
    'naf-vae/paper': ('paper-6f6d94058a', {'fits': (20, '81deb51d3dce')}),
    # the bhn study, pinned when it landed (issue 31)
    'bhn-toy/smoke': ('smoke-491f3ca56f', {'fits': (8, 'f1c06283cff3')}),
    'bhn-toy/cpu': ('cpu-4a31edd312', {'fits': (60, '6e413faa3c36')}),
    'bhn-toy/paper': ('paper-a10475012f', {'fits': (90, 'ffbddd176e6c')}),
    'bhn-classify/smoke': ('smoke-c004c724c7', {'fits': (8, 'ceb99cd1a435')}),
    'bhn-classify/cpu': ('cpu-92c7bca186', {'fits': (45, 'a4fceda02aa5')}),
    'bhn-classify/paper': ('paper-d8a8849f88', {'fits': (147, '4bd5aff17945')}),
    'bhn-active/smoke': ('smoke-869ee5a5ba', {'loops': (4, 'db1e7c4cc2f9')}),
    'bhn-active/cpu': ('cpu-78a429185d', {'loops': (33, '24b86b13e490')}),
    'bhn-active/paper': ('paper-692bd64820', {'loops': (39, 'db9bc81b755a')}),
    'bhn-ood/smoke': ('smoke-401f5db908', {'models': (42, '9f9527cae358')}),
    'bhn-ood/cpu': ('cpu-15ef753151', {'models': (504, '46be4ada4366')}),
    'bhn-ood/paper': ('paper-23e5e6f76d', {'models': (1740, '125196d6ab5c')}),
}


@functools.cache
def _resolved(name: str, preset: str):
    """(pipeline, settings, fingerprint) of one preset, its data loaded once per session."""
    pipeline = pipelines()[name]
    settings = resolve_settings(pipeline, preset, [])
    try:
        fingerprint = pipeline.load_data(settings, None).fingerprint
    except DataError:
        fingerprint = NEEDS_DATA_DIR
    return pipeline, settings, fingerprint


def _digest(keys: list[str]) -> tuple[int, str]:
    return len(keys), hashlib.sha1(",".join(keys).encode()).hexdigest()[:12]


def _first_block_keys(pipeline, sid: str, stage, tags: dict) -> list[str]:
    """The trial keys of the first block the stage's searcher hands out on an empty study (in-memory Optuna)."""
    import optuna

    from pipelines.engine.runner import _study_names
    from pipelines.engine.searchers import StudySearcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = _study_names(stage.plan, f"{pipeline.name}/{sid}/{stage.name}")
    searcher = StudySearcher(stage.plan, optuna.storages.InMemoryStorage(), names, tags, stage.metric, stage.mode, {}, 1, 2)
    return [trial_key(c) for c in configurations(searcher.suggest("t0"))]


def compute(name: str, preset: str) -> tuple[str, dict[str, tuple[int, str]]]:
    """The sweep id of ``name``'s ``preset`` and the trial-key digest of each stage not built from earlier results."""
    pipeline, settings, fingerprint = _resolved(name, preset)
    sid = sweep_id(pipeline.name, preset, settings, fingerprint, pipeline.all_settings())
    stages = {}
    for stage in pipeline.stages(settings):
        if stage.followup:
            continue
        tags = {"data": fingerprint, "stage": stage.name}
        if isinstance(stage.plan, Grid):
            keys = [trial_key(c) for config in stage.plan.configs for c in configurations({**config, **tags})]
        else:
            keys = _first_block_keys(pipeline, sid, stage, tags)
        stages[stage.name] = _digest(keys)
    return sid, stages


CASES = [f"{name}/{preset}" for name, p in pipelines().items() for preset in p.presets]


def test_every_pinned_preset_still_exists():
    assert not set(GOLDEN) - set(CASES), "a pinned preset was removed or renamed: its recorded sweeps would be orphaned"


@pytest.mark.parametrize("case", list(GOLDEN))
def test_sweep_id_and_trial_keys_unchanged(case):
    name, preset = case.split("/")
    assert compute(name, preset) == GOLDEN[case]


if __name__ == "__main__":
    for case in CASES:
        print(f"    {case!r}: {compute(*case.split('/'))!r},")
