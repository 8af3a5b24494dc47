"""What a run leaves behind, and how runs and sweeps are found again."""
