"""DomainBed's MNIST-based domain-generalization benchmark (thesis §5.4): data, ConvNet, stacked trainer, hparams.

Matched against facebookresearch/DomainBed (``domainbed/datasets.py``,
``networks.py``, ``algorithms.py``, ``hparams_registry.py``, ``lib/misc.py``,
``scripts/train.py``); the algorithms' losses are entries of
:mod:`core.methods` (its DomainBed formulas), the selection rules a report
(:mod:`pipelines.rex.selection`).
"""
