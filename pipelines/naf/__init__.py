"""The NAF study (Huang et al. 2018): toy, sinewave, tabular, vae pipelines."""
