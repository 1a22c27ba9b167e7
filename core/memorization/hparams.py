"""The memorization study's published values live here (the registry rule: each core part's in ``core/<part>/hparams.py``).

The pipelines' settings, presets and reports read these; nothing else writes a
published value down. Values: thesis chapter 3 (§3.2's training protocol, the
figures of §3.3-3.4) and the LASS reference code
(xingjunm/dimensionality-driven-learning: ``lass_tf.py``, ``callback_util.py``).
"""
from __future__ import annotations

# §3.2: "the MLPs have 4096 hidden units per layer and are trained for 1000 epochs with SGD and learning rate 0.01. The
# CNNs [...] are trained using SGD with momentum 0.9 and learning rate of 0.01, scheduled to drop by half every 15
# epochs." No batch size is given (nor the CNN's epochs).
MLP = {"width": 4096, "optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "lr_step": 0, "epochs": 1000}
CNN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "lr_step": 15}
CHAPTER = {"mlp": MLP, "cnn": CNN}

# LASS (lass_tf.py): gradient-sign step alpha 0.25, noise scale beta 0.2, L_inf box radius r 0.3 (on the 0-255 pixel
# scale), at most 100 iterations (iter_max), stopped once an iteration finds fewer than 20 new critical points
# (converged_label_thres); the CSR (callback_util.py): 500 validation points drawn afresh every epoch.
LASS_ALPHA = 0.25
LASS_BETA = 0.2
LASS_RADIUS = 0.3
LASS_ITERS = 100
LASS_MIN_NEW = 20
CSR_EXAMPLES = 500
CSR_CIFAR_EPOCHS = 120  # the reference repository's CIFAR-10 CSR plot (complexity_plot.py); the chapter gives none

# Fig 3.1 (§3.3.1): 1,000 training examples, 100 runs of one epoch each.
EASY = {"n_train": 1000, "runs": 100, "epochs": 1}
# Fig 3.3/3.4: a 2-layer MLP of 16 units on 1,000 examples (14 x 14).
SENSITIVITY = {"width": 16, "n_train": 1000}
# Fig 3.5/3.6: hidden units per layer; training-set sizes (at MLP["width"] units) of 50,000 MNIST images; randX noise.
CAPACITY = {"widths": (256, 512, 1024, 2048, 4096, 8192), "sizes": (5000, 10000, 20000, 50000), "n_train": 50000,
            "noise": "randX"}
# Fig 3.10/3.11: each regularizer's published range (low, high) and the paper preset's grid within it.
REGULARIZER_RANGES = {
    "dropout": (0.0, 0.9), "input_dropout": (0.0, 0.9), "input_noise": (0.0, 5.0), "hidden_noise": (0.0, 0.3),
    "weight_decay": (0.0, 1.0), "adversarial": (0.2, 0.7), "adversarial_dropout": (0.03, 0.5),
}
REGULARIZER_GRIDS = {
    "dropout": (0.1, 0.3, 0.5, 0.7, 0.9), "input_dropout": (0.1, 0.3, 0.5, 0.7, 0.9), "input_noise": (0.5, 1.0, 2.0, 3.5, 5.0),
    "hidden_noise": (0.05, 0.1, 0.2, 0.3), "weight_decay": (1e-4, 1e-3, 1e-2, 0.1, 1.0), "adversarial": (0.2, 0.45, 0.7),
    "adversarial_dropout": (0.03, 0.25, 0.5),
}

