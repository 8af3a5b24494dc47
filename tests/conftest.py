"""Shared fixtures: the generated data sets, the real shared data, and how to run the real CLI.

CLI tests run `python -m sampler.cli.app` in a subprocess, in a temporary
folder, so Hydra's global state and logging never leak between tests and the
outputs/ folder they write is thrown away.

By default every test runs on small data sets the session writes once, in the
real formats (tests/fakedata.py), so a fresh clone with no shared data and no
network runs the whole default selection. Tests marked
`@pytest.mark.real_data("cifar10")` / `("camvid")` run on the read-only shared
copies instead (deselected by default: `pytest -m real_data`), and skip, saying
so, where that copy is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fakedata

REPO = Path(__file__).resolve().parent.parent
# The real data, for @real_data tests only: CI and developers keep it beside the
# checkout (../shared/datasets), or name it with SAMPLER_DATA.
SHARED_DATA = Path(os.environ.get("SAMPLER_DATA", REPO.parent / "shared" / "datasets")).resolve()
REAL_SETS = {
    "cifar10": lambda: (SHARED_DATA / "cifar10" / "train").is_dir() or (SHARED_DATA / "cifar-10-batches-py").is_dir(),
    "camvid": lambda: (SHARED_DATA / "camvid" / "train").is_dir(),
}

# Tests never reach the internet: a download the product attempts goes to a proxy on a
# closed local port and fails at once, while a test's own server on 127.0.0.1 is reached.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
os.environ.update(OFFLINE)  # in-process tests too

# Small and quick, but real: every CLI training test starts from these.
TINY = ["data.subset=200", "data.val_size=100", "trainer.epochs=1", "model.widths=[8,16]",
        "trainer.batch_size=50", "trainer.threads=1"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a @real_data test, naming what is missing, where the shared copy is absent."""
    for mark in item.iter_markers("real_data"):
        unknown = set(mark.args) - set(REAL_SETS)
        if unknown or not mark.args:
            raise pytest.UsageError(f"{item.nodeid}: real_data takes data set names from {sorted(REAL_SETS)}")
        missing = [name for name in mark.args if not REAL_SETS[name]()]
        if missing:
            pytest.skip(f"real-data test: no {', '.join(missing)} under {SHARED_DATA} "
                        "(put the shared data sets at ../shared/datasets or set SAMPLER_DATA)")


def is_real_data(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("real_data") is not None


# ---------------------------------------------------------------- generated data

@pytest.fixture(scope="session")
def _generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {"folders": tmp_path_factory.mktemp("data"), "pickles": tmp_path_factory.mktemp("data-pickles")}
    fakedata.write_all(roots["folders"], roots["pickles"])  # about 2 s
    return roots


@pytest.fixture(scope="session")
def fake_data(_generated: dict[str, Path]) -> Path:
    """A data root like the shared one: cifar10/{train,test}/<class>/*.jpg and camvid/ (SegNet layout)."""
    return _generated["folders"]


@pytest.fixture(scope="session")
def fake_cifar_pickles(_generated: dict[str, Path]) -> Path:
    """A data root holding cifar-10-batches-py/ (the official pickles) and nothing else."""
    return _generated["pickles"]


@pytest.fixture
def data_root(request: pytest.FixtureRequest) -> Path:
    """SAMPLER_DATA for this test: the shared data for @real_data tests, the generated sets otherwise."""
    return SHARED_DATA if is_real_data(request) else request.getfixturevalue("fake_data")


# ---------------------------------------------------------------- running the CLI

@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache_dir(request: pytest.FixtureRequest, _session_cache: Path) -> Path:
    """The decoded-data cache. One per session (the first use decodes the images); a
    @real_data test uses $SAMPLER_CACHE when set, so the shared data is decoded once
    across runs, while the generated sets, new every session, never litter it."""
    env = os.environ.get("SAMPLER_CACHE")
    return Path(env) if env and is_real_data(request) else _session_cache


@pytest.fixture
def cli(tmp_path: Path, cache_dir: Path, data_root: Path):
    """Run `sampler ARGS...` in tmp_path with SAMPLER_DATA=data_root (or `data=`);
    returns the CompletedProcess (text, both streams)."""

    def run(*args: str, timeout: float = 600, check: bool = False,
            data: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "SAMPLER_DATA": str(data or data_root), "SAMPLER_CACHE": str(cache_dir),
               "HYDRA_FULL_ERROR": "0", "COLUMNS": "200", **OFFLINE}
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
    """metrics.json as a strict JSON parser reads it: a bare NaN or Infinity fails the test."""
    return json.loads((Path(run_dir) / "metrics.json").read_text(), parse_constant=_not_json)


def _not_json(constant: str) -> None:
    raise ValueError(f"metrics.json holds {constant}, which is not JSON")
