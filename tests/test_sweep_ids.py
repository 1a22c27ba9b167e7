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
    'cmnist-table/smoke': ('smoke-c7196a3e56', {'table': (12, '7b891476af16')}),
    'cmnist-table/paper': ('paper-d6efec2e01', {'table': (60, '0d288ebd354c')}),
    'cmnist-search/smoke': ('smoke-c351e39196', {'search': (1, '6e276b075fa4')}),
    'cmnist-search/paper': ('paper-420cc2eaf4', {'search': (1, '5350f75624ca')}),
    'rex-vs-irm/smoke': ('smoke-d065f1625c', {'fixed': (72, '23d6de0fd2b3'), 'search': (4, 'd5be86baca28')}),
    'rex-vs-irm/paper': ('paper-9cb702481f', {'fixed': (216, '129d86dc8d2e'), 'search': (8, 'ed0a7f9f90df')}),
    'toy-sem/smoke': ('smoke-df14a75bae', {'grid': (64, '5bec2c00d1fd')}),
    'toy-sem/paper': ('paper-119b6a6ac5', {'grid': (320, '1a132d9952bf')}),
    'rl-spurious/smoke': ('smoke-05138f098b', {'runs': (4, 'd2e4039d2105')}),
    'rl-spurious/paper': ('paper-9e8cb36f0f', {'tune': (1, '628ad36af0bb')}),
    'rl-spurious/learn': ('learn-07ff1518df', {'runs': (2, 'f7579196a99f')}),
    'rl-spurious/study': ('study-e59dcbfa23', {'runs': (8, 'b2e754d3f559')}),
    'domainbed/smoke': ('smoke-232573f533', {'ColoredMNIST': (6, 'b569a2324da8'), 'RotatedMNIST': (6, '3347a12cadcc')}),
    'domainbed/mnist': ('mnist-479de9b782', {'ColoredMNIST': (6, 'dad68317384e')}),
    'domainbed/paper': ('paper-6fefa34d60', {'ColoredMNIST': (6, 'b8a9a3c101c5'), 'RotatedMNIST': (21, 'f254b63da617')}),
    'memorization-regularizers/smoke': ('smoke-c9fdc54c24', {'models': (24, '4c5e2287d16b')}),
    'memorization-regularizers/paper': ('paper-c888c8a422', {'models': (68, 'e03deefc3ed8')}),
    'memorization-regularizers/mnist': ('mnist-dc5d9fc4ca', {'models': (80, 'b500b8607d29')}),
    'memorization-csr/smoke': ('smoke-dfc46b95e9', {'training': (5, '1ee2479e6e9f')}),
    'memorization-csr/paper': ('paper-9d9091da96', {'training': (33, '16d44c3b441d')}),
    'memorization-csr/mnist': ('mnist-cdef27737c', {'training': (21, '42715b0a4a52')}),
    'memorization-csr/cifar10': ('cifar10-bc71396494', {'training': (27, 'b60f50655c82')}),
    'memorization-csr/cifar10-random': ('cifar10-random-df04be4b14', {'training': (9, '358208cf617b')}),
    'memorization-easy/smoke': ('smoke-d14bb4151d', {'runs': (300, 'f443c226d0c1')}),
    'memorization-easy/paper': ('paper-2c5c5b2ca3', {'runs': (300, 'f7f7bdc63fd4')}),
    'memorization-easy/mnist': ('mnist-2c5c5b2ca3', {'runs': (300, 'f7f7bdc63fd4')}),
    'memorization-sensitivity/smoke': ('smoke-09be985340', {'sensitivity': (8, '5d2ea5abfe49')}),
    'memorization-sensitivity/paper': ('paper-a3b880184b', {'sensitivity': (20, 'db669247c282')}),
    'memorization-sensitivity/mnist': ('mnist-fa014216a9', {'sensitivity': (12, '453e042b116b')}),
    'memorization-capacity/smoke': ('smoke-7328f7f666', {'runs': (54, '623463d0792e')}),
    'memorization-capacity/paper': ('paper-654b567617', {'runs': (150, '2bebd3258ad7')}),
    'memorization-capacity/mnist': ('mnist-9b8b4842de', {'runs': (42, '3f61be723ab2')}),
    # the naf study, pinned when it landed (issue 30), not from d77c172
    'naf-toy/smoke': ('smoke-3ea077e21b', {'fits': (16, '6b43ca5f3f00')}),
    'naf-toy/cpu': ('cpu-ac9d7982f0', {'fits': (96, 'e23198621336')}),
    'naf-toy/paper': ('paper-86192beb59', {'fits': (260, '5c7bccaf491d')}),
    'naf-sinewave/smoke': ('smoke-83e65f9f2a', {'fits': (4, 'f9fa18199b20')}),
    'naf-sinewave/cpu': ('cpu-c43db45f04', {'fits': (20, 'e005f630d25d')}),
    'naf-sinewave/paper': ('paper-c43db45f04', {'fits': (20, 'e005f630d25d')}),
    'naf-tabular/smoke': ('smoke-46fc489227', {'fits': (4, '93d58670326a')}),
    'naf-tabular/cpu': ('cpu-30d7e2644e', {'fits': (24, 'd2173a5e7450')}),
    'naf-tabular/paper': ('paper-a85498c9c7', {'fits': (150, 'afd96954c5d3')}),
    'naf-vae/smoke': ('smoke-dec9258f1e', {'fits': (3, 'a57ec63f7ec0')}),
    'naf-vae/cpu': ('cpu-a79e316e70', {'fits': (8, 'f407bff45b40')}),
    'naf-vae/paper': ('paper-79d9349d80', {'fits': (20, '9817fd0b58fd')}),
    # the bhn study, pinned when it landed (issue 31)
    'bhn-toy/smoke': ('smoke-491f3ca56f', {'fits': (8, 'f1c06283cff3')}),
    'bhn-toy/cpu': ('cpu-a39ccb5615', {'fits': (60, '04ecb440f630')}),
    'bhn-toy/paper': ('paper-a10475012f', {'fits': (90, 'ffbddd176e6c')}),
    'bhn-classify/smoke': ('smoke-7de5911a07', {'fits': (8, '7506ce9558ce')}),
    'bhn-classify/cpu': ('cpu-bfa84f6e39', {'fits': (45, '1d007e87664f')}),
    'bhn-classify/paper': ('paper-d8a8849f88', {'fits': (147, '4bd5aff17945')}),
    'bhn-active/smoke': ('smoke-526496c7f8', {'loops': (4, '6caf4730b234')}),
    'bhn-active/cpu': ('cpu-baff87d3a6', {'loops': (33, 'f6c0a7b4f5d0')}),
    'bhn-active/paper': ('paper-b5b1ef1e06', {'loops': (39, '3981bdf0fd23')}),
    'bhn-ood/smoke': ('smoke-d45bf9d415', {'models': (42, '20f803cd8664')}),
    'bhn-ood/cpu': ('cpu-bd89651d4b', {'models': (504, '9eead7ba6dda')}),
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
