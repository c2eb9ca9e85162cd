"""Training: the generic loop, tasks, optimizers, checkpoints. `python -m normlab.train` runs it."""
