"""Every fault ends with one clear paragraph, the right exit code and a truthful
metrics.json (issue 10, DESIGN §8): kill -9 and SIGTERM followed by `resume=`
reproduce an uninterrupted run exactly; full disks, bad configs, bad data and
concurrent sweeps each say what happened and what to do."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, read_metrics, run_dirs

# 200 steps an epoch at about 0.6 s: long enough to land a signal inside one.
LONG_EPOCHS = ["data.subset=2000", "data.val_size=100", "trainer.epochs=4", "model.widths=[8,16]",
               "trainer.batch_size=10", "trainer.threads=1"]
# What an interrupted and resumed run must reproduce to the bit: everything but times,
# speeds, the process's memory and where and when it ran.
NOT_REPRODUCED = ("time/", "throughput/", "train/images_per_s", "memory/peak_mb", "started_at", "finished_at",
                  "process", "resumes", "overrides", "git", "status", "error")


def figures(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if not k.startswith(NOT_REPRODUCED) and k != "history"}
    out["history"] = [{k: v for k, v in row.items() if not k.startswith(NOT_REPRODUCED)} for row in metrics["history"]]
    return out


def start(tmp_path: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sampler.cli.app", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(read_metrics(run_dir)["history"]) >= n:
                return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            pytest.fail(f"the run ended before epoch {n}: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run never finished epoch {n}")


@pytest.fixture
def env(cache_dir: Path, data_root: Path) -> dict:
    return {**os.environ, "SAMPLER_DATA": str(data_root), "SAMPLER_CACHE": str(cache_dir),
            "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, fake_data: Path) -> dict:
    """The reference: the same four epochs, never stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    env = {**os.environ, "SAMPLER_DATA": str(fake_data), "SAMPLER_CACHE": str(folder / "cache")}
    subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", *LONG_EPOCHS, f"hydra.run.dir={folder / 'run'}"],
                   cwd=folder, env=env, check=True, capture_output=True)
    return read_metrics(folder / "run")


# ---------------------------------------------------------------- exact resume

def test_kill_9_in_epoch_3_then_resume_reproduces_the_uninterrupted_run(tmp_path: Path, env: dict,
                                                                        uninterrupted: dict) -> None:
    run = tmp_path / "run"
    proc = start(tmp_path, env, "train", *LONG_EPOCHS, f"hydra.run.dir={run}")
    wait_for_epochs(run, 2, proc)
    time.sleep(0.2)  # into epoch 3
    proc.kill()
    proc.communicate()
    killed = read_metrics(run)
    assert killed["status"] == "running" and len(killed["history"]) < 4  # what kill -9 leaves
    done = subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", *LONG_EPOCHS, f"resume={run}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = read_metrics(run)
    assert resumed["status"] == "completed" and len(resumed["resumes"]) == 1
    assert figures(resumed) == figures(uninterrupted)


@pytest.mark.parametrize("sig,code", [("SIGTERM", 143), ("SIGUSR2", 143), ("SIGHUP", 129)])
def test_a_signal_mid_epoch_checkpoints_exits_and_resumes_exactly(tmp_path: Path, env: dict, uninterrupted: dict,
                                                                  sig: str, code: int) -> None:
    run = tmp_path / "run"
    proc = start(tmp_path, env, "train", *LONG_EPOCHS, f"hydra.run.dir={run}")
    wait_for_epochs(run, 1, proc)
    time.sleep(0.25)  # inside epoch 2
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and sig in err and f"resume={run}" in err
    stopped = read_metrics(run)
    assert stopped["status"] == "interrupted" and sig in stopped["error"]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] > 0, "the signal should land inside an epoch (200 steps of ~3 ms)"
    assert not list(run.glob(".*.tmp")), "no temporary files left behind"
    # The command the message gives, as it stands: the run's own overrides apply again.
    (told,) = re.findall(r"`sampler train (resume=\S+)`", err)
    done = subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", told],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert figures(read_metrics(run)) == figures(uninterrupted)
    # TensorBoard goes on without duplicated or missing steps.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = [e.step for e in EventAccumulator(str(run)).Reload().Scalars("train/loss")]
    assert steps == [1, 2, 3, 4]


def test_a_closed_terminal_checkpoints_and_records_interrupted(tmp_path: Path, env: dict) -> None:
    """An ssh session or terminal window that closes: SIGHUP, then every write to it fails
    (EIO). The run must still checkpoint and record `interrupted`, not fail on its progress
    bar or its last message."""
    import fcntl
    import termios

    run = tmp_path / "run"
    master, slave = os.openpty()

    def own_terminal() -> None:  # the pty becomes the run's controlling terminal, as a shell's is
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "sampler.cli.app", "train", *LONG_EPOCHS, f"hydra.run.dir={run}"],
                            cwd=tmp_path, env={**env, "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=own_terminal)
    os.close(slave)
    os.set_blocking(master, False)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # read what it shows, as a terminal does
            with contextlib.suppress(OSError):
                os.read(master, 1 << 16)
            with contextlib.suppress(OSError, ValueError, KeyError):
                if read_metrics(run)["history"]:
                    break
            time.sleep(0.05)
        time.sleep(0.25)  # inside epoch 2, the progress bar drawing
    finally:
        os.close(master)  # the terminal goes: the kernel hangs it up and sends SIGHUP
    assert proc.wait(timeout=60) == 129
    stopped = read_metrics(run)
    assert stopped["status"] == "interrupted" and stopped["error"].startswith("SIGHUP: the run stopped at epoch 2")
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] > 0


def test_a_requeued_sweep_job_continues_from_its_checkpoint(tmp_path: Path, env: dict, uninterrupted: dict) -> None:
    """What submitit does on pre-emption: the same job runs again in the same directory."""
    sweep = tmp_path / "sweep"
    args = ["train", "-m", *LONG_EPOCHS, f"hydra.sweep.dir={sweep}"]
    proc = start(tmp_path, env, *args)
    deadline = time.time() + 60
    while not run_dirs(sweep) and time.time() < deadline:
        time.sleep(0.05)
    (job,) = run_dirs(sweep)
    wait_for_epochs(job, 1, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143 and read_metrics(job)["status"] == "interrupted"
    again = subprocess.run([sys.executable, "-m", "sampler.cli.app", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    m = read_metrics(job)
    assert m["status"] == "completed" and len(m["resumes"]) == 1
    assert figures(m) == figures(uninterrupted)


def test_a_sigterm_in_the_final_test_stops_it_between_its_parts(tmp_path: Path) -> None:
    """The test's probes can take half a minute (task.shift_px): a SIGTERM must not wait
    for all of them, or a scheduler's SIGKILL after its grace period leaves `running`."""
    from types import SimpleNamespace

    from sampler.experiments.errors import Stopped
    from sampler.experiments.train import runner
    from sampler.experiments.train.signals import StopRequest

    run = SimpleNamespace(cfg={"trainer": {"epochs": 3, "checkpoint": True}},
                          record=SimpleNamespace(run_dir=tmp_path))
    stop = StopRequest()
    runner._stop_in_test(run, stop)  # nothing asked: the test goes on
    stop.requested = "SIGTERM"
    with pytest.raises(Stopped, match=f"final test; its 3 epochs are trained.*resume={tmp_path}` runs the test"):
        runner._stop_in_test(run, stop)
    run.cfg["trainer"]["checkpoint"] = False
    with pytest.raises(Stopped, match="cannot be continued"):
        runner._stop_in_test(run, stop)


def test_resuming_a_run_that_is_still_training_is_refused(tmp_path: Path, env: dict) -> None:
    run = tmp_path / "run"
    longer = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=100" for a in LONG_EPOCHS]
    proc = start(tmp_path, env, "train", *longer, f"hydra.run.dir={run}")  # a minute: still going when asked
    try:
        wait_for_epochs(run, 1, proc)
        second = subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", f"resume={run}"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "being trained by another process" in second.stderr, second.stderr
        assert read_metrics(run)["status"] == "running" and "resumes" not in read_metrics(run)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 143 and read_metrics(run)["status"] == "interrupted", "the first went on alone"


def test_resume_with_a_different_config_is_refused_naming_the_keys(cli, tmp_path: Path) -> None:
    cli("train", *TINY, "hydra.run.dir=run", check=True)
    before = (tmp_path / "run" / "metrics.json").read_text()
    proc = cli("train", *TINY, "model.pool=avg", "trainer.threads=2", "resume=run")
    assert proc.returncode == 2 and "model.pool" in proc.stderr and "Traceback" not in proc.stderr
    assert "trainer.threads" not in proc.stderr.split("only")[0]  # threads may change
    assert (tmp_path / "run" / "metrics.json").read_text() == before  # untouched
    proc = cli("train", *TINY, "resume=nowhere")
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    assert cli("train", *TINY, "resume=run").returncode == 0  # completed: nothing to do
    # resume=true finds the run although the threads and the progress bar differ
    cli("train", *TINY, check=True)
    (run,) = [d for d in run_dirs(tmp_path / "outputs")]
    others = [a for a in TINY if not a.startswith("trainer.threads=")]
    found = cli("train", *others, "trainer.threads=2", "trainer.progress=false", "resume=true")
    said = " ".join((found.stdout + found.stderr).split())
    assert found.returncode == 0 and f"{run} completed earlier" in said, said


# ---------------------------------------------------------------- disks

def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")


@pytest.fixture
def small_disk(tmp_path: Path):
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, size)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`: its next write fails with ENOSPC."""
    with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"x" * 512)
    return disk


def test_a_full_run_disk_fails_with_a_paragraph_and_a_truthful_metrics_json(cli, small_disk) -> None:
    disk = small_disk("disk", "2m")
    # [128,256]: the checkpoint (weights and momentum) is about 2.4 MB, more than the disk holds.
    proc = cli("train", *TINY, "model.widths=[128,256]", f"hydra.run.dir={disk}/run")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "checkpoint.pt" in proc.stderr and "MB free" in proc.stderr
    m = read_metrics(disk / "run")
    assert m["status"] == "failed" and "checkpoint.pt" in m["error"]
    assert not list((disk / "run").glob(".*.tmp")) and not (disk / "run" / "checkpoint.pt").exists()


def test_a_disk_too_full_for_the_tensorboard_events_is_a_write_error(small_disk) -> None:
    """The SummaryWriter writes and flushes its first event as it is made: on a full disk
    that came out of RunRecord as a bare OSError, a 100-line Hydra traceback."""
    from sampler.experiments.errors import WriteError
    from sampler.experiments.runs.record import RunRecord

    disk = fill(small_disk("disk", "8k"))
    with pytest.raises(WriteError) as caught:
        RunRecord(disk / "run", {"seed": 0}, [])
    assert caught.value.key == str(disk / "run") and "No space left on device" in caught.value.message


def test_tensorboard_s_writer_thread_fails_quietly_and_the_run_reports_it_once(small_disk) -> None:
    """The disk fills up mid-run: the writer thread's failed write came out as an
    "Exception in thread Thread-1" traceback above sampler's own message. (200 figures:
    more than the events file's last page still holds.)"""
    disk = small_disk("disk", "64k")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sampler.experiments.errors import WriteError\n"
        "from sampler.experiments.runs.record import RunRecord\n"
        "disk = Path(sys.argv[1])\n"
        "record = RunRecord(disk / 'run', {'seed': 0}, [])\n"
        "with open(disk / 'filler', 'wb', buffering=0) as f:\n"
        "    try:\n"
        "        while True: f.write(b'x' * 512)\n"
        "    except OSError: pass\n"
        "try:\n"
        "    record.epoch({'epoch': 1, **{f'train/loss{i}': 2.0 for i in range(200)}})\n"
        "except WriteError as e:\n"
        "    print('WriteError:', e.key, e.message)\n"
        "record.close()\n")
    proc = subprocess.run([sys.executable, "-c", script, str(disk)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"WriteError: {disk / 'run'} cannot write it: No space left on device")
    assert proc.stderr == "", proc.stderr  # no thread traceback
    assert read_metrics(disk / "run")["history"] == []  # the epoch stopped at TensorBoard, before metrics.json


def test_a_log_file_the_disk_refuses_is_turned_off_with_one_warning(cli, small_disk, tmp_path: Path) -> None:
    """logging's FileHandler printed a "--- Logging error ---" traceback for every line
    the full disk refused, over 200 lines on stderr for a three-epoch run."""
    log_file = fill(small_disk("disk", "8k")) / "train.log"
    proc = cli("train", *TINY, "trainer.epochs=2", f"hydra.job_logging.handlers.file.filename={log_file}")
    assert proc.returncode == 0, proc.stderr
    assert "Logging error" not in proc.stderr and "Traceback" not in proc.stderr
    (warning,) = [line for line in proc.stdout.splitlines() if "could not write the log file" in line]
    assert str(log_file) in warning and "MB free there" in warning
    assert "epoch 2/2" in proc.stdout  # the console keeps the whole log


def test_ctrl_c_during_a_write_waits_for_the_file_then_interrupts(tmp_path: Path) -> None:
    """Ctrl-C inside torch.save's C++ writer came out as a RuntimeError, which the writer
    took for a failed disk (exit 1, status failed); for the cache, a warning while the
    run trained on."""
    from sampler.experiments.runs import atomic

    path = tmp_path / "checkpoint.pt"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"first half ")
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C in the middle
            time.sleep(0.05)
            f.write(b"second half")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic._atomic(path, write, io_errors=(OSError, RuntimeError))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert path.read_bytes() == b"first half second half", "the file was written whole, then the interrupt came"
    assert not list(tmp_path.glob(".*.tmp"))
    atomic.write_text(path, "again")  # no Ctrl-C pending: a plain write
    assert path.read_text() == "again"


# A writer of `path` that stops inside its write: kill -9 (argv[2] == "kill") or a long wait.
WRITER = """import os, signal, sys, time
from pathlib import Path
from sampler.experiments.runs.atomic import _atomic
def write(tmp):
    Path(tmp).write_bytes(b"half")
    print("writing", flush=True)
    os.kill(os.getpid(), signal.SIGKILL) if sys.argv[2] == "kill" else time.sleep(60)
_atomic(Path(sys.argv[1]), write)
"""


def test_a_temporary_file_kill_9_left_is_removed_by_the_next_write_but_a_live_writer_s_is_not(tmp_path: Path) -> None:
    """kill -9 inside an atomic write left `.NAME.*.tmp` for ever (52 MB in the cache dir
    after a killed first decode); two processes may write one cache file at once."""
    from sampler.experiments.runs.atomic import write_text

    path = tmp_path / "data.pt"
    killed = subprocess.run([sys.executable, "-c", WRITER, str(path), "kill"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL and killed.stdout == "writing\n", killed.stderr
    (stale,) = tmp_path.glob(".data.pt.*.tmp")
    live = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "wait"], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline() == "writing\n"
        elsewhere = tmp_path / ".data.pt.another-host.1.abc.tmp"  # a process this host cannot see
        elsewhere.write_text("")
        write_text(path, "done")
        assert path.read_text() == "done"
        left = sorted(tmp_path.glob(".data.pt.*.tmp"))
        assert stale not in left and elsewhere in left
        assert [t for t in left if f".{live.pid}." in t.name], "the live writer's file stays"
        assert len(left) == 2
    finally:
        live.kill()
        live.communicate()


def test_a_full_cache_disk_only_warns(cli, small_disk, tmp_path: Path) -> None:
    cache = small_disk("cache", "64k")
    proc = cli("train", *TINY, f"data.cache_dir={cache}")
    assert proc.returncode == 0, proc.stderr
    assert "could not cache the decoded data" in proc.stdout + proc.stderr
    assert not list(cache.glob("*.pt"))


@pytest.mark.parametrize("code,hint", [(errno.EROFS, "make it writable"), (errno.EACCES, "make it writable"),
                                       (errno.ENOSPC, "free some space on that disk")])
def test_a_write_error_s_hint_follows_the_errno_and_names_the_setting_that_moves_the_file(code: int,
                                                                                           hint: str) -> None:
    """A read-only 1 MB disk was told to free some space (the free < 64 MB rule came first)."""
    from sampler.experiments.runs.atomic import write_error

    error = write_error(Path("/cache/x.pt"), OSError(code, os.strerror(code)), free=1.0, where="data.cache_dir=...")
    assert f"(1.0 MB free there). To go on, {hint} or choose another folder (data.cache_dir=...)" in error.message
    assert "hydra.run.dir" not in error.message


def test_a_read_only_cache_disk_warns_with_the_cache_s_setting(cli, small_disk) -> None:
    cache = small_disk("cache", "1m")
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    proc = cli("train", *TINY, f"data.cache_dir={cache}")
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stdout.splitlines() if "could not cache the decoded data" in line]
    assert "Read-only file system" in warning and "make it writable" in warning and "free some space" not in warning
    assert "data.cache_dir=" in warning and "hydra.run.dir" not in warning


def test_a_disk_too_full_for_hydra_s_own_files_is_one_paragraph_and_leaves_nothing(small_disk, env: dict) -> None:
    """Hydra writes .hydra/config.yaml before any of sampler's code runs, and printed its
    ENOSPC as a traceback, leaving an empty run dir behind."""
    disk = fill(small_disk("disk", "8k"))
    proc = subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", *TINY], cwd=disk, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"error: {disk / 'outputs' / 'runs'}") and ".hydra/config.yaml" in proc.stderr
    assert "No space left on device" in proc.stderr and "free some space" in proc.stderr
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no empty run dir, no outputs/


@pytest.mark.parametrize("obstacle", ["file", "unwritable"])
def test_an_unwritable_output_path_is_a_user_error(cli, tmp_path: Path, obstacle: str) -> None:
    target = tmp_path / "blocked"
    if obstacle == "file":
        target.write_text("not a folder")
        where = target / "runs"
    else:
        if os.geteuid() == 0:
            ro = tmp_path / "ro"
            _mount_tmpfs(ro, "1m")
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            where = ro / "runs"
        else:
            target.mkdir()
            target.chmod(0o500)
            where = target / "runs"
    try:
        proc = cli("train", *TINY, f"hydra.run.dir={where}")
        assert proc.returncode == 2, proc.stderr
        assert "hydra.run.dir" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 3
    finally:
        if obstacle == "unwritable" and os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(tmp_path / "ro")], capture_output=True)


# ---------------------------------------------------------------- configs and data

@pytest.mark.parametrize("args,key", [
    (["model.widths=5"], "model.widths"),
    (["optim.name=adam"], "optim.name"),
    (["optim.lr=-1"], "optim.lr"),
    (["+optim.momentun=0.9"], "optim.momentun"),
    (["sched.name=linear"], "sched.name"),
    (["model.order=5"], "model.order"),
    (["data.val_size=abc"], "data.val_size"),
    (["data.augment.flip=sometimes"], "data.augment.flip"),
    (["model.norm_args.eps=0"], "model.norm_args.eps"),
    (["model.norm_args.momentum=5"], "model.norm_args.momentum"),
    (["data.augment.crop_padding=100"], "data.augment.crop_padding"),
    (["optim.momentum=-1"], "optim.momentum"),
    (["optim.weight_decay=-5"], "optim.weight_decay"),
    (["sched=onecycle", "sched.pct_start=2"], "sched.pct_start"),
])
def test_config_errors_come_before_any_data_is_read_and_leave_nothing(cli, tmp_path: Path, args: list[str],
                                                                     key: str) -> None:
    proc = cli("train", *TINY, *args, data=tmp_path / "no-data-here")
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert "CIFAR" not in proc.stderr  # refused before looking for data
    assert not run_dirs(tmp_path / "outputs") and not list((tmp_path / "outputs" / "runs").glob("*"))


def test_inspect_refuses_a_bad_widths_too(cli) -> None:
    proc = cli("inspect", "model.widths=5")
    assert proc.returncode == 2 and "model.widths" in proc.stderr and "Traceback" not in proc.stderr


def test_a_refused_sweep_job_is_listed_but_leaves_no_tensorboard_run(cli, tmp_path: Path) -> None:
    # BatchNorm at batch 1 is refused; each value is fine with another of the other key's,
    # so the sweep's own check lets it through and the one job refuses itself.
    tiny = [o for o in TINY if not o.startswith("trainer.batch_size=")]
    proc = cli("train", "-m", *tiny, "model.norm=batch,none", "trainer.batch_size=1,50", "hydra.sweep.dir=sweep")
    assert proc.returncode == 1, proc.stderr
    (bad,) = [r for r in run_dirs(tmp_path / "sweep") if "model.norm=batch" in r.name and "batch_size=1," in r.name]
    m = read_metrics(bad)
    assert m["status"] == "failed" and m["error"].startswith("refused: trainer.batch_size")
    assert not list(bad.glob("events.out.tfevents.*"))
    assert "3 of 4 jobs completed" in proc.stderr and "refused" in proc.stderr
    assert "trainer.batch_size=1" in (tmp_path / "sweep" / "summary.md").read_text()


def test_a_sweep_value_wrong_with_every_other_value_is_refused_before_any_job(cli, tmp_path: Path) -> None:
    proc = cli("train", "-m", *TINY, "optim.lr=0.05,-1", "hydra.sweep.dir=sweep")
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "optim.lr: -1 must be a positive number (with optim.lr=-1" in said, said
    assert not (tmp_path / "sweep").exists()


def test_a_loss_far_above_its_start_is_divergence(cli, tmp_path: Path) -> None:
    proc = cli("train", *TINY, "optim.lr=1e6")
    assert proc.returncode == 2 and "optim.lr" in proc.stderr and "Traceback" not in proc.stderr
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    assert m["status"] == "diverged" and "lower optim.lr" in m["error"]
    # The lr the epoch's steps took and the configured peak, not the schedule's lr after its last step.
    assert "this epoch's steps took lr up to 1e+06 (the schedule's peak, optim.lr, is 1e+06)" in m["error"], m["error"]


def test_a_loss_that_is_not_finite_names_the_lr_its_step_took() -> None:
    from sampler.experiments.errors import Diverged
    from sampler.experiments.train.loop import train_epoch
    from sampler.experiments.train.optim import build_scheduler

    model = torch.nn.Linear(4, 3)
    batches = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(4)]
    batches[2] = (torch.full((2, 4), float("inf")), torch.tensor([0, 1]))  # step 2's loss is not finite
    # The torch lr in other units than optim.lr's, as decoupled SGD and Muon have it.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = build_scheduler(optimizer, 4, 4, "onecycle", pct_start=0.25)
    took = 0.4 * scheduler.lr_lambdas[0](2)  # step 2's share of the peak, in optim.lr's units
    with pytest.raises(Diverged) as caught:
        train_epoch(model, batches, optimizer, scheduler, torch.nn.CrossEntropyLoss(), contextlib.nullcontext,
                    check_every=1, peak_lr=0.4)
    assert took != 0.4 * scheduler.lr_lambdas[0](3)  # the lr after the step would be another
    assert f"at step 2, which took lr {took:.3g} (the schedule's peak, optim.lr, is 0.4)" in caught.value.message


def test_a_nan_figure_is_null_in_metrics_json_named_and_warned_about_once(tmp_path: Path, caplog) -> None:
    from sampler.experiments.runs.record import RunRecord

    record = RunRecord(tmp_path, {"seed": 0}, [], tensorboard=False)
    for epoch in (1, 2):  # as momentum=5 did: training finite, every evaluation nan
        record.epoch({"epoch": epoch, "train/loss": 2.0, "val/loss": float("nan"), "val/acc": 0.1})
    record.update({"test/loss": float("inf"), "test/acc": 0.1})
    m = record.finish("completed")
    assert m["test/loss"] == float("inf")  # the run's own figures keep the value
    saved = read_metrics(tmp_path)  # strict: a bare NaN would fail here
    assert saved["status"] == "completed" and saved["test/loss"] is None and saved["test/acc"] == 0.1
    assert [row["val/loss"] for row in saved["history"]] == [None, None]
    assert saved["non_finite"] == ["test/loss", "val/loss"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # once per figure, not once per epoch
    assert warnings[0].startswith("val/loss was nan; metrics.json holds null") and "model.norm_args" in warnings[0]


def test_an_empty_class_folder_is_named(cli, tmp_path: Path, data_root: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_root / "cifar10", data / "cifar10")
    for image in (data / "cifar10" / "train" / "dog").iterdir():
        image.unlink()
    proc = cli("train", *TINY, data=data)
    assert proc.returncode == 2 and "train/dog" in proc.stderr and "no images" in proc.stderr


def test_an_image_changed_in_place_is_read_again(tmp_path: Path, data_root: Path) -> None:
    from sampler.experiments.data.cifar10 import load_cifar10_tensors

    data = tmp_path / "data"
    shutil.copytree(data_root / "cifar10", data / "cifar10")
    cache = tmp_path / "cache"
    first = load_cifar10_tensors(data, cache_dir=cache)
    image = sorted((data / "cifar10" / "test" / "cat").iterdir())[0]
    # Overwritten in place: the folder's entries (and so its mtime) stay as they were.
    shutil.copyfile(sorted((data / "cifar10" / "test" / "ship").iterdir())[0], image)
    second = load_cifar10_tensors(data, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2  # a new key, a new cache file
    assert not torch.equal(first["test_x"], second["test_x"])


# ---------------------------------------------------------------- concurrency

def test_a_job_another_process_runs_is_running_elsewhere_not_failed(tmp_path: Path, env: dict) -> None:
    sweep = tmp_path / "sweep"
    long_job = ["train", "-m", *LONG_EPOCHS, "trainer.epochs=30", f"hydra.sweep.dir={sweep}"]
    owner = start(tmp_path, env, *long_job)
    try:
        deadline = time.time() + 60
        while not run_dirs(sweep) and time.time() < deadline:
            time.sleep(0.05)
        (job,) = run_dirs(sweep)
        wait_for_epochs(job, 1, owner)
        log_before = (job / "train.log").read_text()
        other = subprocess.run([sys.executable, "-m", "sampler.cli.app", *long_job, "resume=true"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        assert "running elsewhere" in other.stderr and "failed" not in other.stderr
        assert (job / "train.log").read_text().startswith(log_before)
        assert "skipped" not in (job / "train.log").read_text()
    finally:
        owner.kill()
        owner.communicate()
    assert json.loads((job / "metrics.json").read_text())["status"] == "running"


@pytest.mark.parametrize("content", ["[1]", '"completed"', "null", "3"])
def test_a_metrics_json_that_is_not_an_object_is_unreadable_on_resume(cli, tmp_path: Path, content: str) -> None:
    """resume= reads an earlier attempt's status: a JSON value other than an object is no
    record (was an AttributeError traceback), so the run trains from the start."""
    from sampler.experiments.runs.sweep import completed_metrics

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(content)
    assert completed_metrics(run) is None
    proc = cli("train", *TINY, f"resume={run}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert read_metrics(run)["status"] == "completed"
