"""sampler's command line: Typer outside, the real `hydra.main` inside (DESIGN §2)."""
