"""Views and benchmarks that need no training run: config, inspect, ls, bench."""
