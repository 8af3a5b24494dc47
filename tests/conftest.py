"""Shared fixtures: where the shared data is, and how to run the real CLI.

CLI tests run `python -m sampler.cli.app` in a subprocess, in a temporary
folder, so Hydra's global state and logging never leak between tests and the
outputs/ folder they write is thrown away.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# CI and developers keep the read-only data beside the checkout (../shared/datasets).
SHARED_DATA = Path(os.environ.get("SAMPLER_DATA", REPO.parent / "shared" / "datasets")).resolve()


def has_cifar() -> bool:
    return (SHARED_DATA / "cifar10" / "train").is_dir() or (SHARED_DATA / "cifar-10-batches-py").is_dir()


def has_camvid() -> bool:
    return (SHARED_DATA / "camvid" / "train").is_dir()


needs_cifar = pytest.mark.skipif(not has_cifar(), reason=f"no CIFAR-10 under {SHARED_DATA}")
needs_camvid = pytest.mark.skipif(not has_camvid(), reason=f"no CamVid under {SHARED_DATA}")

# Small and quick, but real: every CLI training test starts from these.
TINY = ["data.subset=200", "data.val_size=100", "trainer.epochs=1", "model.widths=[8,16]",
        "trainer.batch_size=50", "trainer.threads=1"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-data cache for the whole test session (the first use decodes the JPEGs)."""
    env = os.environ.get("SAMPLER_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(tmp_path: Path, cache_dir: Path):
    """Run `sampler ARGS...` in tmp_path; returns the CompletedProcess (text, both streams)."""

    def run(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
        env = {**os.environ, "SAMPLER_DATA": str(SHARED_DATA), "SAMPLER_CACHE": str(cache_dir),
               "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
        proc = subprocess.run([sys.executable, "-m", "sampler.cli.app", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"sampler {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    return run


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (one holding metrics.json) under root, sorted."""
    return sorted(p.parent for p in Path(root).rglob("metrics.json"))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
