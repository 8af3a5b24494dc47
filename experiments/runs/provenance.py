"""Where a run came from: package versions and the sampler checkout's git commit."""
from __future__ import annotations

import os
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


# The flags that decide this project's speed: vector width and native bf16 (docs/benchmarks.md).
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def hardware() -> dict[str, Any]:
    """The CPU's model name and the cores this process may use, and the GPU's name when
    one is in use: figures are only comparable on the same hardware."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first core's
    except OSError:
        pass
    cpu = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:  # a VM may show only "AMD EPYC": family and model tell the generation
        cpu += f" (family {info['cpu family']} model {info.get('model', '?')})"
    flags = info.get("flags", "").split()
    out: dict[str, Any] = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                           else os.cpu_count(), "features": [f for f in CPU_FEATURES if f in flags]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu"] = torch.cuda.get_device_name()
    return out


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
