"""The NAF study's core (Huang et al. 2018): toy densities, tabular sets, the sine-wave posterior, published values."""
