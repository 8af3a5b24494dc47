"""trainer.deterministic: torch's deterministic algorithms for one run, the op without a
deterministic kernel named, and what each run records."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import read_metrics, run_dirs
from sampler.experiments.errors import ConfigError
from sampler.experiments.train.env import deterministic, nondeterministic_op

TINY = ("data.subset=100", "data.val_size=50", "data.test_size=50", "trainer.epochs=2", "model.widths=[8,16]",
        "trainer.threads=1", "trainer.batch_size=16")


def _unpool() -> torch.Tensor:
    y, i = torch.nn.functional.max_pool2d(torch.randn(1, 2, 4, 4), 2, return_indices=True)
    return torch.nn.functional.max_unpool2d(y, i, 2)  # no deterministic kernel, on the CPU too


def test_the_setting_lasts_one_run_and_warn_collects_the_ops() -> None:
    with deterministic("true", torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        with pytest.raises(RuntimeError) as err:
            _unpool()
        assert nondeterministic_op(err.value) == "max_unpooling2d_forward_out"
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic("warn", torch.device("cpu")) as ops:
        _unpool()
        _unpool()
    assert ops == ["max_unpooling2d_forward_out"]
    assert nondeterministic_op(RuntimeError("some other failure")) is None
    with pytest.raises(ConfigError) as bad:
        with deterministic("sometimes", torch.device("cpu")):
            pass
    assert bad.value.key == "trainer.deterministic"


def test_deterministic_names_the_op_that_has_no_deterministic_kernel(cli, tmp_path: Path) -> None:
    seg = ("task=segmentation", "data.subset=8", "trainer.epochs=1", "model.widths=[8,16]", "trainer.threads=1",
           "head.upsample=unpool")  # max_unpool2d has no deterministic kernel, on the CPU too
    proc = cli("train", *seg, "trainer.deterministic=true")
    assert proc.returncode == 2, proc.stderr
    assert "trainer.deterministic" in proc.stderr and "max_unpooling2d_forward_out" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dirs(tmp_path / "outputs"), "refused at its first step, exit 2: nothing left behind"
    cli("train", *seg, "trainer.deterministic=warn", check=True)
    m = read_metrics(run_dirs(tmp_path / "outputs")[-1])
    assert m["status"] == "completed" and m["deterministic"] == "warn"
    assert m["nondeterministic_ops"] == ["max_unpooling2d_forward_out"]


def test_deterministic_runs_repeat_bit_for_bit(cli, tmp_path: Path) -> None:
    for name in ("a", "b"):
        cli("train", *TINY, "trainer.deterministic=true", f"hydra.run.dir={name}", check=True)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert a["deterministic"] is True
    assert [r["train/loss"] for r in a["history"]] == [r["train/loss"] for r in b["history"]]
    assert a["test/loss"] == b["test/loss"]




def test_a_bad_value_is_refused_before_training(cli, tmp_path: Path) -> None:
    proc = cli("train", *TINY, "trainer.deterministic=sometimes")
    assert proc.returncode == 2 and "trainer.deterministic" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() or not run_dirs(tmp_path / "outputs")
