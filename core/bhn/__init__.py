"""Bayesian hypernetworks (Krueger et al., arXiv 1710.04759) in plain PyTorch (bayes.md a.2, d.5-d.9).

wn.py (weight-normed primary nets with per-sample scales), hypernet.py (q over the scales / a toy's theta:
LinearFlow then RealNVP, IAF or DSF from core/flows), models.py (BHNSpec, init_model, sample_probs: bhn, map,
mcdropout, ensemble), objective.py (elbo_loss, kl_weight, clipping), train.py (fit, fit_hypernet),
reference.py (a loop written like experiment_MLP_WN / utils.train_model, for the step-for-step test),
hparams.py (published settings and tables).
"""
