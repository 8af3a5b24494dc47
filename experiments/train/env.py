"""Process setup for a run: seeds, device, threads, float handling, provenance."""
from __future__ import annotations

import gc
import logging
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

log = logging.getLogger("sampler")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator for data order and augmentation."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError("seed", f"{seed!r} must be an integer")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name not in available:
        raise ConfigError("trainer.device", f"unknown device {name!r}; choose one of: auto, cpu, cuda, mps")
    if not available[name]:
        raise ConfigError("trainer.device", f"{name} was asked for but this machine has none; "
                          "use trainer.device=auto (or cpu)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on a GPU and fp32 elsewhere; the result is recorded in
    every run's metrics so that comparisons never mix precisions silently."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", "bf16"):
        raise ConfigError("trainer.precision", f"unknown precision {name!r}; choose one of: auto, bf16, fp32")
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("trainer.precision=bf16 on a CPU without AVX-512 BF16 or AMX: autocast emulates it and "
                    "ran about 10x slower than fp32 on such a CPU (see README, Benchmarks)")
    return name


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 matrix instructions (Linux flags; False if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def setup_threads(threads: int | None, parallel_jobs: int = 1) -> int:
    """Divide the cores between parallel sweep jobs instead of oversubscribing them."""
    if threads is None:
        threads = max(1, available_cpus() // max(1, parallel_jobs))
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError("trainer.threads", f"{threads!r} must be a positive integer or null (auto)")
    torch.set_num_threads(threads)
    # Denormal floats made one BatchNorm run's later epochs ~4x slower than its
    # first on these CPUs (pytorch issues 19651, 21734): flush them to zero.
    torch.set_flush_denormal(True)
    return threads


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
    path = path or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if commit is None or dirty is None else bool(dirty)}


def reset_peak_memory(device: torch.device) -> None:
    """Start a job's peak_memory_mb afresh: jobs of a sweep that share one process
    (Hydra's basic launcher, reused joblib workers) would otherwise each report the
    largest job so far. Garbage of the previous job is collected first so it does not
    count (on a GPU one config gave 405 MB in a fresh joblib worker and 529 and 504 MB in
    reused ones; not re-measured since)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak resident set size
            f.write("5")
    except OSError:
        pass  # elsewhere the peak counts from the start of the process


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory for CUDA; the process's peak resident set size otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def seconds_since_process_start() -> float | None:
    """Wall time since this process was started (Linux), to measure start-up cost."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
