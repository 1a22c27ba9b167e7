"""Normalizing flows in plain PyTorch, K configurations of one shape stacked on dim 0 (bayes.md §a.1, §c, §d.0).

spec.py (FlowSpec), made.py (masked weight-normed conditioner), transformers.py (maf, affine-gated, dsf, ddsf),
model.py (init_block / forward / log_prob / sample), coupling.py (RealNVP, IAF, elementwise linear, for BHN),
energies.py (U1-U9, log Z by quadrature), train.py (batched Adam fit), reference.py (a loop like NAF's
maf_experiments.py, for the step-for-step test).
"""
