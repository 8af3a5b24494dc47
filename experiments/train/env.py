"""Process setup for a run: seeds, device, threads, float handling, provenance."""
from __future__ import annotations

import gc
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sampler.blocks.registry import Registry

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


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: python, numpy, torch (CPU and CUDA) and the
    generator that orders and augments the batches."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


DEVICES: Registry = Registry("device")
DEVICES.register("auto", "cuda if there is one, else mps, else cpu")(lambda: True)
DEVICES.register("cpu", "the CPU")(lambda: True)
DEVICES.register("cuda", "the first CUDA GPU")(torch.cuda.is_available)
DEVICES.register("mps", "Apple's Metal GPU")(torch.backends.mps.is_available)

PRECISIONS: Registry = Registry("precision")
PRECISIONS.register("auto", "bf16 autocast on a GPU, fp32 elsewhere")(lambda: None)
PRECISIONS.register("bf16", "bfloat16 autocast (weights and optimizer stay fp32)")(lambda: torch.bfloat16)
PRECISIONS.register("fp32", "float32 throughout")(lambda: None)


def resolve_device(name: str) -> torch.device:
    available = DEVICES.get(name, "trainer.device")
    if name == "auto":
        for device in ("cuda", "mps"):
            if DEVICES.get(device)():
                return torch.device(device)
        return torch.device("cpu")
    if not available():
        raise ConfigError("trainer.device", f"{name} was asked for but this machine has none; "
                          "use trainer.device=auto (or cpu)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on a GPU and fp32 elsewhere; the result is recorded in
    every run's metrics so that comparisons never mix precisions silently."""
    PRECISIONS.get(name, "trainer.precision")
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("trainer.precision=bf16 on a CPU without AVX-512 BF16 or AMX: autocast emulates it and "
                    "ran about 12x slower than fp32 on such a CPU (docs/benchmarks.md)")
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
