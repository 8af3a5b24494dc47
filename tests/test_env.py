"""The process environment a run starts from: which precision `auto` means on this machine,
and where the start-up time goes."""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, read_metrics, run_dirs
from sampler.experiments.errors import ConfigError
from sampler.experiments.train import env, runner

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch):
    """Make torch's CPU probe report the given features (none: a CPU without native bf16)."""

    def set_features(*features: str) -> None:
        caps = {"architecture": "x86_64", "avx2": True, **{f: True for f in features}}
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)

    return set_features


@pytest.mark.parametrize("features, expected", [((), "fp32"), (("avx512_bf16",), "bf16"), (("amx_bf16",), "bf16"),
                                                (("avx512_bf16", "amx_bf16"), "bf16")])
def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_on_others(native_bf16, features, expected) -> None:
    native_bf16(*features)
    assert env.cpu_has_bf16() is (expected == "bf16")
    assert env.resolve_precision("auto", CPU) == expected
    assert env.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert env.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert env.resolve_precision("fp32", CPU) == "fp32"


def test_avx512_without_bf16_is_not_native(native_bf16) -> None:
    # oneDNN accepts bf16 on any AVX-512 BW/VL/DQ CPU (torch.ops.mkldnn._is_mkldnn_bf16_supported()
    # says True there) but emulates it: auto must stay fp32.
    native_bf16("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "avx512_vnni")
    assert not env.cpu_has_bf16() and env.resolve_precision("auto", CPU) == "fp32"


@pytest.mark.parametrize("features, warns", [((), True), (("avx512_bf16",), False)])
def test_explicit_bf16_warns_only_without_native_bf16(native_bf16, caplog, features, warns) -> None:
    native_bf16(*features)
    with caplog.at_level(logging.WARNING, logger="sampler"):
        assert env.resolve_precision("bf16", CPU) == "bf16"
    assert ("AVX-512 BF16 or AMX" in caplog.text) is warns


def test_older_torch_is_probed_through_its_private_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    for avx512_bf16, amx in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert env.cpu_has_bf16() is (avx512_bf16 or amx)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert env.cpu_bf16_features() == [] and env.resolve_precision("auto", CPU) == "fp32"


def test_the_real_probe_agrees_with_the_kernels_cpu_flags() -> None:
    # A cross-check of torch's CPUID probe against Linux's own reading of the same bits.
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith(("flags", "Features"))), None)
    if flags is None:
        pytest.skip("/proc/cpuinfo lists no CPU flags here")
    assert env.cpu_bf16_features() == [f for f in env.NATIVE_BF16_FEATURES if f in flags]


# ---------------------------------------------------------------- start-up time


def _parts(m: dict) -> tuple[float, float, float, float]:
    return (m["time/startup_s"], m["time/startup_import_torch_s"], m["time/startup_dynamo_s"],
            m["time/startup_sampler_s"])


def test_a_run_records_its_resolved_precision_and_its_start_up_in_three_parts(cli, tmp_path: Path) -> None:
    cli("train", *TINY, check=True)
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    assert m["config"]["trainer"]["precision"] == "auto"
    assert m["precision"] == env.resolve_precision("auto", CPU), "auto is resolved before it is recorded"
    assert m["compiled"] is False, "trainer.compile=false: the eager model trains"
    total, torch_s, dynamo_s, sampler_s = _parts(m)
    assert min(total, torch_s, dynamo_s, sampler_s) >= 0
    assert torch_s + dynamo_s + sampler_s == pytest.approx(total, abs=1e-6)
    assert torch_s > 0.1 and dynamo_s > 0, "a fresh process imports torch, and torch._dynamo in _set_up"


def _cpp_compiler() -> bool:
    try:
        env.check_cpp_compiler("trainer.compile", "")
    except ConfigError:
        return False
    return True


needs_cpp = pytest.mark.skipif(not _cpp_compiler(), reason="torch.compile on a CPU needs a C++ compiler (g++)")


def test_compile_on_a_cpu_without_a_cpp_compiler_stops_before_the_run(cli, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor import config as inductor_config

    missing = str(tmp_path / "no-such-g++")
    monkeypatch.setenv("CXX", missing)  # what inductor searches, read when it is imported (the CLI's process)
    with inductor_config.patch({"cpp.cxx": (None, missing)}), \
            pytest.raises(ConfigError, match="apt-get install g") as e:  # and in this one, imported already
        env.resolve_compile(True, CPU)
    assert e.value.key == "trainer.compile" and "no-such-g++" in e.value.message
    assert env.resolve_compile(False, CPU) is False and env.resolve_compile("auto", CPU) is False  # nothing built
    proc = cli("train", *TINY, "trainer.compile=true")
    assert proc.returncode == 2 and "trainer.compile" in proc.stderr and "trainer.compile=false" in proc.stderr
    assert "Traceback" not in proc.stderr and not run_dirs(tmp_path / "outputs"), proc.stderr


@needs_cpp
def test_a_compiled_run_on_a_cpu_trains_and_records_it(cli, tmp_path: Path) -> None:
    proc = cli("train", *TINY, "trainer.epochs=2", "trainer.compile=true", check=True)
    assert "No CUDA runtime" not in proc.stderr, "torch's CUDA_HOME warning says nothing on a CPU"
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    assert m["status"] == "completed" and m["compiled"] is True, m.get("error")
    assert len(m["history"]) == 2 and all(r["train/loss"] > 0 for r in m["history"])
    assert 0 <= m["test/acc"] <= 1


def test_compile_auto_compiles_on_a_cuda_gpu_only() -> None:
    assert env.resolve_compile("auto", torch.device("cuda")) is True
    assert env.resolve_compile("auto", CPU) is False
    assert env.resolve_compile(True, CPU) is True and env.resolve_compile(False, torch.device("cuda")) is False
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="true, false or auto") as e:
            env.resolve_compile(bad, CPU)
        assert e.value.key == "trainer.compile"


class _Clock(runner._StartupClock):
    """A process's first job or a later one, leaving the real first-job flag alone."""

    def __init__(self, first: bool) -> None:
        self.started, self.first, self.dynamo_s = time.perf_counter(), first, 0.0


def test_startup_parts_of_a_first_and_a_later_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "seconds_since_process_start", lambda: 6.5)
    monkeypatch.setattr(runner, "torch_import_seconds", lambda: 2.4)
    first = _Clock(first=True)
    first.dynamo_s = 2.0
    assert first.parts() == {"time/startup_s": 6.5, "time/startup_import_torch_s": 2.4,
                             "time/startup_dynamo_s": 2.0, "time/startup_sampler_s": pytest.approx(2.1)}
    import torch._dynamo  # noqa: F401  as after the process's first job

    later = _Clock(first=False)  # a later job of a sweep process: torch and torch._dynamo are in already
    later.import_dynamo()
    total, torch_s, dynamo_s, sampler_s = _parts(later.parts())
    assert torch_s == 0.0 and dynamo_s == 0.0 and sampler_s == total >= 0


def test_startup_parts_stay_consistent_when_the_clocks_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process clock ticks in 10 ms steps: an import timed to just above the total is cut to fit.
    monkeypatch.setattr(runner, "seconds_since_process_start", lambda: 2.40)
    monkeypatch.setattr(runner, "torch_import_seconds", lambda: 2.404)
    total, torch_s, dynamo_s, sampler_s = _parts(_Clock(first=True).parts())
    assert (total, torch_s, dynamo_s, sampler_s) == (2.40, 2.40, 0.0, 0.0)
    # Without a process clock (not Linux) nothing is made up.
    monkeypatch.setattr(runner, "seconds_since_process_start", lambda: None)
    assert _Clock(first=True).parts()["time/startup_sampler_s"] is None


@pytest.mark.parametrize("first_import, exact", [("", True), ("import torch; ", False)])
def test_torch_import_is_timed_where_it_happens_or_bounded_from_the_process_start(first_import, exact) -> None:
    code = (f"{first_import}import time; from sampler.experiments.train import env; "
            "print(env._TORCH_IMPORT_S is not None, env.torch_import_seconds(), env.seconds_since_process_start())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    timed, seconds, since_start = out[0] == "True", float(out[1]), float(out[2])
    assert timed is exact
    assert 0.05 < seconds <= since_start + 0.01


def test_the_first_importer_can_hand_its_timed_import_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "_TORCH_IMPORT_S", None)
    env.note_torch_import(1.25)
    assert env.torch_import_seconds() == 1.25


def test_the_cpu_a_run_ran_on_is_named_with_the_flags_that_decide_its_speed() -> None:
    from sampler.experiments.runs.provenance import CPU_FEATURES, hardware

    h = hardware()
    assert h["cpu"] and h["cores"] >= 1
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    assert h["features"] == [f for f in CPU_FEATURES if f in flags]


def _fake_proc(root: Path, running: int, own_states: str) -> Path:
    """A /proc with `running` runnable threads machine-wide, and this process's threads in
    the given states (R running, S sleeping)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "loadavg").write_text(f"1.50 1.20 0.90 {running}/300 4242\n")
    for i, state in enumerate(own_states):
        task = root / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + i} (python (x) y) {state} 1 2 3\n")
    return root


@pytest.mark.parametrize("running, own, threads, cores, warns", [
    (1, "RS", 2, 2, False),   # only this process runs
    (2, "R", 2, 2, True),     # one other thread, and this run wants both cores
    (2, "R", 1, 2, False),    # one other thread and one of ours: they fit
    (5, "RS", 1, 2, True),    # four others: even one thread competes
    (5, "RS", 2, 8, False),   # a bigger machine has room
])
def test_a_run_is_warned_when_other_processes_keep_the_cores_busy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                  running, own, threads, cores, warns) -> None:
    proc = _fake_proc(tmp_path, running, own)
    monkeypatch.setattr(env.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(env, "available_cpus", lambda: cores)
    assert env.busy_threads(proc) == running - own.count("R")
    warning = env.contention(threads, proc)
    assert (warning is not None) == warns
    if warns:
        assert f"{running - own.count('R')} threads of other processes" in warning
        assert ("trainer.threads=1" in warning) == (threads > 1)


def test_a_run_pinned_to_some_cores_is_not_warned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, 9, "R")
    monkeypatch.setattr(env.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(env, "available_cpus", lambda: 2)  # SLURM or taskset gave it 2 of the 8
    assert env.contention(2, proc) is None


def test_without_proc_the_load_is_unknown_and_nothing_is_said(tmp_path: Path) -> None:
    assert env.busy_threads(tmp_path / "missing") is None
    assert env.contention(64, tmp_path / "missing") is None


def test_a_quiet_machine_is_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Every CPU run asks at start-up: where nothing else runs it must not pause to look again.
    naps: list[float] = []
    monkeypatch.setattr(env.time, "sleep", naps.append)
    assert env.busy_threads(_fake_proc(tmp_path / "quiet", 1, "R")) == 0 and naps == []
    assert env.busy_threads(_fake_proc(tmp_path / "busy", 3, "R")) == 2 and len(naps) == 2


def test_a_command_without_a_thread_setting_is_told_to_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, 3, "R")
    monkeypatch.setattr(env.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(env, "available_cpus", lambda: 2)
    warning = env.contention(2, proc, knob=None)  # sampler bench
    assert warning is not None and "threads=" not in warning and "when the cores are free" in warning
