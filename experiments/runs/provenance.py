"""Where a run came from: package versions and the sampler checkout's git commit."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def versions() -> dict[str, str]:
    """Package versions from their metadata (importing torchvision costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": of("torchvision"),
            "hydra": of("hydra-core"), "sampler": of("sampler"), "cuda": torch.version.cuda or "none"}


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the sampler checkout (null when not run from one)."""
    path = path or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if commit is None or dirty is None else bool(dirty)}
