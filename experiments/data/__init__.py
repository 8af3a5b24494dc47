"""Data sets in memory as tensors (DESIGN §6)."""
