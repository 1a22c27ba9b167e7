"""Reinforcement learning with partial observability and spurious features (thesis §5.4).

:mod:`core.rl.envs`: DeepMind Control tasks as gymnasium envs with a spurious
feature per domain; :mod:`core.rl.sac`: SAC with a shared encoder and a latent
reward model penalized across training domains by the method registry. Plain
PyTorch / numpy / gymnasium: no Ray, MLflow or Optuna here. dm_control and
gymnasium come with the ``rl`` extra (``pip install -e '.[rl]'``).
"""
