"""Process setup for a run: seeds, device, threads, float handling, provenance."""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# time/startup_import_torch_s: timed here when this module is the process's first to
# import torch (under the CLI it is not: see torch_import_seconds).
_TORCH_IMPORT_STARTED = time.perf_counter()
_TORCH_IMPORTED_BEFORE = "torch" in sys.modules
import torch  # noqa: E402

_TORCH_IMPORT_S: float | None = None if _TORCH_IMPORTED_BEFORE else time.perf_counter() - _TORCH_IMPORT_STARTED
_ENV_IMPORTED_AT = time.perf_counter()

from sampler.blocks.registry import Registry, is_int

from ..errors import ConfigError

log = logging.getLogger("sampler")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator for data order and augmentation."""
    if not is_int(seed):
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
PRECISIONS.register("auto", "bf16 autocast on a GPU or a CPU with native bf16 (AVX-512 BF16, AMX), "
                   "fp32 elsewhere")(lambda: None)
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
    """`auto` is bf16 autocast on a GPU and on a CPU with native bf16 (`cpu_has_bf16`),
    fp32 elsewhere; the result is recorded in every run's metrics so that comparisons
    never mix precisions silently."""
    PRECISIONS.get(name, "trainer.precision")
    if name == "auto":
        return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("trainer.precision=bf16 on a CPU without AVX-512 BF16 or AMX: autocast emulates it and "
                    "ran about 12x slower than fp32 on such a CPU (docs/benchmarks.md)")
    return name


def resolve_compile(value: Any, device: torch.device) -> bool:
    """`trainer.compile`: true, false, or auto = on a CUDA GPU only. torch.compile's fused
    graphs pay where kernel launches dominate (a GPU); on the 2-core CPUs measured its
    backward graph was slower than eager's kernels (docs/benchmarks.md)."""
    if value == "auto":
        return device.type == "cuda"
    if not isinstance(value, bool):
        raise ConfigError("trainer.compile", f"{value!r} must be true, false or auto (compile on a CUDA GPU only, "
                          "where it pays; on a CPU eager was faster)")
    if value and device.type == "cpu":
        check_cpp_compiler("trainer.compile", "trainer.compile=false")
    return value


def check_cpp_compiler(key: str, eager: str) -> None:
    """torch.compile on a CPU writes its kernels in C++ and builds them with the compiler
    that inductor finds (`$CXX`, else g++); without one the first step fails deep in
    inductor, so a run checks for it before it starts. Also mutes torch's "No CUDA runtime
    is found, using CUDA_HOME=..." warning, which the C++ build prints on a machine
    without CUDA, where it says nothing about the CPU kernels being built."""
    from torch._inductor import cpp_builder, exc

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    try:
        cpp_builder.get_cpp_compiler()
    except (exc.InvalidCxxCompiler, OSError, RuntimeError) as e:
        cxx = os.environ.get("CXX")
        raise ConfigError(key, f"torch.compile on a CPU builds its kernels with a C++ compiler, and none works here "
                          f"({'$CXX=' + repr(cxx) if cxx else 'no g++ on PATH, $CXX unset'}; inductor said: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}). Install one (Debian/Ubuntu: "
                          "apt-get install g++) or point $CXX at one; or run eager "
                          f"({eager}), which was faster on the CPUs measured anyway") from None


DETERMINISM = ("false", "true", "warn")
NONDETERMINISTIC = " does not have a deterministic implementation"


def parse_deterministic(mode: Any) -> bool | str:
    """trainer.deterministic as True, False or 'warn'."""
    if str(mode).lower() not in DETERMINISM:
        raise ConfigError("trainer.deterministic", f"{mode!r} is not one of {', '.join(DETERMINISM)}: true = "
                          "deterministic algorithms only, warn = warn on ops that have none, false = torch's default")
    return {"false": False, "true": True, "warn": "warn"}[str(mode).lower()]


@contextlib.contextmanager
def deterministic(mode: Any, device: torch.device) -> Iterator[list[str]]:
    """trainer.deterministic for the length of one run. true: torch uses deterministic
    algorithms only, and an op that has none stops the run (`nondeterministic_op` names
    it); warn: such ops run, and the list yielded collects their names; false: torch's
    defaults (on a CPU nearly every kernel is deterministic anyway). cuBLAS needs its
    workspace pinned before the first GEMM to be deterministic."""
    mode = parse_deterministic(mode)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    if mode and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ops: list[str] = []
    # use_deterministic_algorithms imports torch._dynamo (seconds): only called when the
    # setting changes, so that a default run's start-up split stays as it was.
    change = before[:2] != (bool(mode), mode == "warn")
    if change:
        torch.use_deterministic_algorithms(bool(mode), warn_only=mode == "warn")
    if mode:
        torch.backends.cudnn.benchmark = False
    try:
        if mode != "warn":
            yield ops
            return
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield ops
        finally:  # outside catch_warnings, so that the warnings passed on are shown, not caught again
            for w in caught:
                op = nondeterministic_op(w.message)
                if op is None:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                elif op not in ops:
                    ops.append(op)
    finally:
        if change:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def nondeterministic_op(error: BaseException | Warning | str) -> str | None:
    """The op named by torch's 'X does not have a deterministic implementation' error or
    warning, or None when it is another error."""
    text = str(error)
    return text.split(NONDETERMINISTIC, 1)[0].split()[-1].strip("'\"") if NONDETERMINISTIC in text else None

# The CPU features that run bf16 natively. torch.ops.mkldnn._is_mkldnn_bf16_supported()
# is not this test: it says whether oneDNN *accepts* bf16, which it does on any CPU with
# AVX-512 BW/VL/DQ (Skylake-X, where bf16 is emulated) or AVX-NE-CONVERT
# (ATen/native/mkldnn/Utils.h, mkldnn_bf16_device_check → ideep::has_bf16_type_support).
# torch.backends.cpu.get_cpu_capability() says 'AVX512' with or without bf16.
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_bf16_features() -> list[str]:
    """Which of NATIVE_BF16_FEATURES this CPU has, by torch's own CPUID probe:
    `torch.cpu.get_capabilities()` (public in recent torch, 2.14.1 here: CPUID as read by
    the cpuinfo library that ATen dispatches on), else the private
    `torch.cpu._is_avx512_bf16_supported()` and `_is_amx_tile_supported()` of older torch
    (every AMX CPU shipped has AMX-BF16); none where torch has neither, so `auto` stays at
    the safe fp32."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        caps = get_capabilities()
        return [f for f in NATIVE_BF16_FEATURES if caps.get(f, False)]
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return [f for f, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]


def cpu_has_bf16() -> bool:
    """Whether the CPU runs bf16 natively (AVX-512 BF16 or AMX): where it does not, CPU
    autocast emulates bf16 and is slower than fp32."""
    return bool(cpu_bf16_features())


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_threads(threads: Any) -> None:
    """`trainer.threads`: a positive whole number, or null (auto); not true (an int to Python)."""
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ConfigError("trainer.threads", f"{threads!r} must be a positive integer or null (auto)")


def setup_threads(threads: int | None, parallel_jobs: int = 1) -> int:
    """Divide the cores between parallel sweep jobs instead of oversubscribing them."""
    check_threads(threads)
    if threads is None:
        threads = max(1, available_cpus() // max(1, parallel_jobs))
    torch.set_num_threads(threads)
    # Denormal floats made one BatchNorm run's later epochs ~4x slower than its
    # first on these CPUs (pytorch issues 19651, 21734): flush them to zero.
    torch.set_flush_denormal(True)
    return threads


def busy_threads(proc: Path = Path("/proc"), samples: int = 3, pause: float = 0.01) -> int | None:
    """Threads of other processes that are runnable right now, machine-wide: /proc/loadavg's
    count of runnable threads less this process's own (the fewest of a few reads, so that a
    passing spike does not count). None where /proc does not say (not Linux)."""
    counts = []
    try:
        for i in range(samples):
            if i:
                time.sleep(pause)
            running = int((proc / "loadavg").read_text().split()[3].split("/")[0])
            own = 0
            for task in (proc / "self" / "task").iterdir():
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    own += (task / "stat").read_text().rpartition(")")[2].split()[0] == "R"
            counts.append(max(0, running - own))
            if counts[-1] == 0:
                break  # nothing else runs: no need to look again (a quiet start-up pays one read)
    except (OSError, ValueError, IndexError):
        return None
    return min(counts)


def contention(threads: int, proc: Path = Path("/proc"), knob: str | None = "trainer.threads") -> str | None:
    """A warning when other processes already keep this machine's cores busy, so that a run
    of `threads` threads would compete with them for the cores: OpenMP threads then wait
    for each other at every op, and small batches ran up to 90x slower on a 2-core machine.
    None when the cores are free, or when this process is pinned to some of them (SLURM,
    taskset: whatever runs elsewhere is not competing). `knob` is the setting that would
    lower the thread count (None: there is none, so the advice is to wait)."""
    cores = os.cpu_count() or 1
    if available_cpus() < cores:
        return None
    busy = busy_threads(proc)
    if busy is None or busy + threads <= cores:
        return None
    return (f"{busy} threads of other processes are running on this machine's {cores} cores, and this run adds "
            f"{threads}: they will compete, and each op's threads wait for the slowest (a 2-core machine ran "
            "small batches up to 90x slower so), and its timings will not be this machine's. "
            + (f"Unless the cores free up, run with {knob}={max(1, cores - busy)}, or one job at a time."
               if threads > 1 and knob else "Measure speed when the cores are free."))


_EARLIER_JOB = False  # whether this process has started a job before (reset_peak_memory)


def reset_peak_memory(device: torch.device) -> None:
    """Start a job's peak_memory_mb afresh: jobs of a sweep that share one process
    (Hydra's basic launcher, reused joblib workers) would otherwise each report the
    largest job so far. Garbage of the previous job is collected first so it does not
    count (on a GPU one config gave 405 MB in a fresh joblib worker and 529 and 504 MB in
    reused ones; not re-measured since). The first job of a process has no earlier job
    to collect, and skips the collection (0.1-0.2 s of its start-up)."""
    global _EARLIER_JOB
    if _EARLIER_JOB:
        gc.collect()
    _EARLIER_JOB = True
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


def note_torch_import(seconds: float) -> None:
    """For the code that imports torch first in a process (the CLI's entry module, say):
    hand its timed `import torch` to `torch_import_seconds`."""
    global _TORCH_IMPORT_S
    _TORCH_IMPORT_S = seconds


def torch_import_seconds() -> float | None:
    """time/startup_import_torch_s: how long this process took to import torch.

    Exact when this module imported torch, or when the first importer timed it and called
    `note_torch_import`. Otherwise it is the time from the process's start to this
    module's import: under the CLI, sampler.blocks imports torch first (cli → errors →
    blocks.registry), and blocks may not import experiments, so nothing of ours can stand
    right after it. That bound also holds Python's own start and the modules imported
    before this one besides torch (typer, rich, hydra, sampler's own: about 0.25 s with
    torch at 1.5-2.4 s, by `python -X importtime` on a 2-core VM), so it never overstates
    sampler's own part. None where the process start is unknown (not Linux)."""
    if _TORCH_IMPORT_S is not None:
        return _TORCH_IMPORT_S
    since_start = seconds_since_process_start()
    if since_start is None:
        return None
    return max(0.0, since_start - (time.perf_counter() - _ENV_IMPORTED_AT))
