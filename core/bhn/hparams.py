"""Published BHN settings and tables (bayes.md a.2 B2-B4), with their sources. Evidence tags as bayes.md:
[C] read from the reference code, [V] verified in a public repository's printed output, [-] not available offline.
"""
from __future__ import annotations

REFERENCE = "CW-Huang/BayesianHypernet"

# B2: experiment_MLP_WN.py argparse defaults [C]
B2_MLP = {
    "source": f"{REFERENCE} experiment_MLP_WN.py defaults [C]",
    "arch": "mlp", "hidden": (200,), "activation": "relu", "model": "bhn", "posterior": "realnvp", "coupling": 0,
    "prior_lambda": 1.0, "lr": 1e-4, "batch": 32, "epochs": 10, "size": 2000, "anneal": False, "reinit": True,
    "seed": 427, "valid_samples": 20, "test_samples": 200, "lrdecay": False, "perdatapoint": False,
}
# B2: launchers/launch_IAF_MNIST_MLP.py grid [C]
B2_IAF_GRID = {
    "source": f"{REFERENCE} launchers/launch_IAF_MNIST_MLP.py [C]",
    "posterior": "iaf", "coupling": (4, 8, 12, 16), "lr": (1e-3, 1e-4), "reinit": (0, 1), "epochs": 200,
    "hidden": (800,), "size": 5000,
}
# B2: the MC-dropout baseline of the same script (MCdropout_MLP: dropout 0.5 after each hidden layer) [C]
B2_DROPOUT = {"source": f"{REFERENCE} experiment_MLP_WN.py MCdropout_MLP [C]", "model": "mcdropout", "dropout": 0.5}

# B3: Active_Learning_Tasks/BHN_AL/dk_AL.py, AL_helpers.py, launch5/6_dk_AL.py [C]
B3_ACTIVE = {
    "source": f"{REFERENCE} Active_Learning_Tasks/BHN_AL/dk_AL.py, launch5_dk_AL.py, launch6_dk_AL.py [C]",
    "train_split": 50000, "shuffle_seed": 5001, "candidate_initial": 10000, "pool": 40000, "initial_per_class": 2,
    "initial": 20, "acquisitions": 98, "per_acquisition": 10, "max_labels": 1000, "pool_subset": 2000,
    "mc_samples": 100, "epochs": 50, "batch": 128, "lr": 1e-3, "coupling": 4, "arch": "cnn",
    "cnn": "3 conv x 32 filters 4x4 valid, max-pool after the last, dense 128", "seeds": (1, 2, 3),
    "acquisition": ("bald", "max_ent", "var_ratio", "mean_std", "random"),
    "params_reset": ("none", "random", "deterministic", "pretrained"),
}

# B4: dk_anomaly_detection.py + launchers/launch_AD_MNIST3.py ('Dan' net) [C]
B4_DAN = {
    "source": f"{REFERENCE} dk_anomaly_detection.py, launchers/launch_AD_MNIST3.py [C]",
    "arch": "mlp", "hidden": (256, 256, 256), "activation": "gelu", "lr": 1e-3, "batch": 128, "epochs": 100,
    "mc_samples": 100, "map_l2": 1e-5, "dropout": 0.5, "coupling": 4, "flow_hidden": 256, "noise_std": 0.01,
    "ooc": 1, "exclude": 3, "max_norm": 100, "clip_grad": 100,
}

# Hendrycks & Gimpel (arXiv 1610.02136), MNIST max-softmax baseline, x100 [V]
HG_MNIST_OOD = {
    "source": "hendrycks/error-detection Vision/MNIST_Softmax_Stats.ipynb (3 x 256 GELU MLP, test error 1.48%) [V]",
    "rows": {
        "omniglot": {"auroc": 95.25, "aupr_in": 96.05, "aupr_out": 94.02},
        "notmnist": {"auroc": 82.87, "aupr_in": 84.47, "aupr_out": 84.67},
        "cifar10bw": {"auroc": 93.70, "aupr_in": 94.07, "aupr_out": 93.23},
        "gaussian": {"auroc": 88.29, "aupr_in": 88.93, "aupr_out": 88.90},
        "uniform": {"auroc": 97.89, "aupr_in": 98.63, "aupr_out": 96.06},
        "error_detection": {"auroc": 97.83, "aupr_in": 99.97, "aupr_out": 43.88},  # in = success, out = error
    },
}

# The BHN paper's own tables (MNIST error vs size, CIFAR-10, active-learning curves, OOD/adversarial) [-]
BHN_PUBLISHED = None
BHN_PUBLISHED_NOTE = "published: not entered (the BHN paper's tables are not available offline) [-]"

# B3 rough anchor: Riashat Islam's plotted MC-dropout CNN runs, BALD, 10 per acquisition; labels -> test accuracy %
# [V, read from a figure, +-1 point] (200 labels: 86-88)
AL_MCDROPOUT_BALD = {200: 87.0, 300: 92.0, 500: 95.0, 1000: 97.5}
AL_MCDROPOUT_BALD_SOURCE = (f"{REFERENCE} Active_Learning_Tasks/MC_Dropout_Keras/Results/Query_Rate_Comparison/"
                            "Query_Rate_Comparison_N1000.png [V, read from a figure, +-1 point]")
