"""Core of the memorization study (thesis chapter 3, "A Closer Look at Memorization").

Plain PyTorch/numpy, no sweep machinery:

- :mod:`.data`: image sets (digits, MNIST, CIFAR-10), train/val splits, randX / randY noise;
- :mod:`.models`: the 2-layer ReLU MLP and the small AlexNet-style CNN, with regularizers;
- :mod:`.lass`: Langevin adversarial sample search and the critical sample ratio;
- :mod:`.sensitivity`: loss-sensitivity by unrolled SGD, Gini coefficient, per-class matrix;
- :mod:`.train`: the plain training loop for one model;
- :mod:`.seeds`: many small MLP runs (seeds, widths) trained together as one block.
"""
