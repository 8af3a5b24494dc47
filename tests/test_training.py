"""Real training on the shared CIFAR-10: the runner must actually learn."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import read_metrics, run_dirs


@pytest.mark.slow
@pytest.mark.real_data("cifar10")
def test_cifar10_real_training_learns(cli, tmp_path: Path) -> None:
    """3 epochs of the default stack on 10,000 images: far above chance (10%)."""
    cli("train", "data.subset=10000", "data.val_size=1000", "trainer.epochs=3", check=True, timeout=900)
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    assert m["status"] == "completed"
    assert m["test/acc"] > 0.45, m["test/acc"]
    losses = [row["train/loss"] for row in m["history"]]
    assert losses[-1] < losses[0]
