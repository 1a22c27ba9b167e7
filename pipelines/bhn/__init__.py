"""Bayesian hypernetworks (the thesis's chapter 6; docs bayes.md §d.5-d.8): bhn-toy, bhn-classify, bhn-active, bhn-ood."""
