"""One training run: environment, model, optimiser, loops, metrics, the runner."""
