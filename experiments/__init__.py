"""Data, the train/eval loop, optimizers, run records and the runner that wires them."""
