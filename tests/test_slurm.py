"""Sweeps on a real one-node SLURM cluster (DESIGN §9): Debian's slurmctld, slurmd, munge
and slurmdbd (sacct), started by .ci/slurm.sh, driven through `hydra/launcher=slurm_cpu`.
A job is really cancelled with scancel, a request really pends for ever, sbatch really
refuses a GPU. Deselected by default: `pytest -m slurm` (CI: `.ci/run`)."""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY, read_metrics, run_dirs

pytestmark = pytest.mark.slurm

STATE = Path(os.environ.get("SAMPLER_SLURM_STATE", "/tmp/sampler-slurm"))
SCRIPT = REPO / ".ci" / "slurm.sh"
# Small enough for a 2-core node: two jobs side by side, one core and 1 GB each.
LAUNCH = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
# One variant trains long enough (300 tiny epochs, ~15 s) to be cancelled while it runs.
SWEEP = ["train", "-m", *LAUNCH, "model.pool=max,avg", "trainer.epochs=1,300",
         *[o for o in TINY if not o.startswith("trainer.epochs")]]
LONG = "model.pool=avg"  # with trainer.epochs=300: job #3 of the sweep


def _answers(env: dict[str, str]) -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s.startswith(("idle", "mixed", "alloc")) for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm_conf() -> str:
    """SLURM_CONF of a cluster that answers: $SLURM_CONF, or .ci/slurm.sh's, started here
    (and stopped after the module) when it does not answer yet."""
    conf = os.environ.get("SLURM_CONF") or str(STATE / "etc" / "slurm.conf")
    env = {**os.environ, "SLURM_CONF": conf}
    started = False
    if not _answers(env):
        if os.geteuid() != 0:
            pytest.skip(f"no SLURM cluster answers sinfo (SLURM_CONF={conf}), and starting one with "
                        f"{SCRIPT.relative_to(REPO)} needs root")
        if not shutil.which("slurmctld") and not shutil.which("apt-get"):
            pytest.skip("no SLURM cluster answers sinfo, and neither slurmctld nor apt-get is here to make one")
        proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 and "apt-get failed" in proc.stderr:
            pytest.skip(f"could not install SLURM from the Debian packages: {proc.stderr.strip()[-500:]}")
        assert proc.returncode == 0, f"{SCRIPT.name} start failed:\n{proc.stdout}\n{proc.stderr}"
        started = True
    yield conf
    if started:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture
def on_slurm(slurm_conf: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SLURM_CONF", slurm_conf)  # the `cli` fixture passes os.environ on
    return slurm_conf


def _default_sigint() -> None:
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: the sweep gets Ctrl-C as a terminal user's would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cwd: Path, cache_dir: Path, data_root: Path, *args: str) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: on SIGABRT the process prints every thread's stack (see finish()).
    env = {**os.environ, "SAMPLER_DATA": str(data_root), "SAMPLER_CACHE": str(cache_dir), "COLUMNS": "200",
           "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-m", "sampler.cli.app", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)


def finish(proc: subprocess.Popen, out: Output, timeout: float) -> None:
    """Wait for the process to end; if it does not, fail with its output and the stack of
    each of its threads (SIGABRT under PYTHONFAULTHANDLER), so that a rare hang explains itself."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.join(timeout=10)
        pytest.fail(f"the process did not end within {timeout:.0f}s; its output, then its threads' stacks:\n"
                    f"{out.text}")
    out.join(timeout=10)


class Output(threading.Thread):
    """A process's output as it comes, so a test can wait for a line while it runs."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.lines = proc, []
        self.start()

    def run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def squeue(*args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30).stdout


def array_tasks(sweep: Path) -> dict[str, list[str]]:
    """SLURM task id → the job's overrides, from submitit's pickles in <sweep>/.submitit/."""
    tasks = {}
    for path in sweep.glob(".submitit/*/*_submitted.pkl"):
        with path.open("rb") as f:
            tasks[path.name.removesuffix("_submitted.pkl")] = list(pickle.load(f).args[0])
    return tasks


def wait_until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, out=None):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if proc is not None and proc.poll() is not None:
            time.sleep(0.5)
            pytest.fail(f"the sweep ended before {what}:\n{out.text if out else ''}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s\n{out.text if out else ''}"
        time.sleep(0.2)
    return found


# ---------------------------------------------------------------- cancel, summary, resume

def test_a_cancelled_job_is_recorded_and_resume_submits_only_it(on_slurm, cli, cache_dir: Path, data_root: Path,
                                                                tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = start(tmp_path, cache_dir, data_root, *SWEEP)
    out = Output(proc)
    try:
        def long_job_trained_two_epochs() -> Path | None:
            for path in tmp_path.glob(f"outputs/multirun/*/*{LONG}*trainer.epochs=300*/metrics.json"):
                try:
                    if len(read_metrics(path.parent)["history"]) >= 2:  # a checkpoint to continue from
                        return path.parent
                except ValueError:
                    pass
            return None

        job_dir = wait_until(long_job_trained_two_epochs, 300, "the long job trained two epochs", proc, out)
        sweep = job_dir.parent
        (task,) = [t for t, o in array_tasks(sweep).items() if LONG in o and "trainer.epochs=300" in o]
        subprocess.run(["scancel", task], check=True, timeout=30)
        finish(proc, out, 300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out.join(timeout=10)
    text = out.text
    first_s = time.monotonic() - t0

    assert proc.returncode == 1, text
    assert "Traceback" not in text and "UncompletedJobError" not in text, text
    assert "3 of 4 jobs completed" in text
    (said,) = [line for line in text.splitlines() if line.startswith("  cancelled ")]
    assert LONG in said and f"SLURM job {task} ended CANCELLED" in said and "resume=true" in said
    metrics = read_metrics(job_dir)
    assert metrics["status"] == "cancelled" and metrics["slurm"]["state"].startswith("CANCELLED")
    assert metrics["slurm"]["job_id"] == task
    summary = (sweep / "summary.md").read_text()
    (listed,) = [line for line in summary.splitlines() if line.startswith("- cancelled: ")]
    assert "1 cancelled" in summary and job_dir.name in listed and f"SLURM job {task} ended CANCELLED" in listed
    before = {d.name: read_metrics(d) for d in run_dirs(sweep)}
    assert sorted(m["status"] for m in before.values()) == ["cancelled", "completed", "completed", "completed"]

    t1 = time.monotonic()
    arrays_before = {t.split("_")[0] for t in array_tasks(sweep)}
    resumed = cli(*SWEEP, "resume=true", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "3 of 4 jobs completed earlier and are not submitted again" in resumed.stderr
    (new_array,) = {t.split("_")[0] for t in array_tasks(sweep)} - arrays_before
    assert LONG in array_tasks(sweep)[new_array] and "trainer.epochs=300" in array_tasks(sweep)[new_array]

    def accounted() -> list[str] | None:
        """The array's accounting once it has an end state: slurmctld records a job's end
        a moment after the job's process has handed back its result (a CI run saw RUNNING
        right after the sweep returned)."""
        rows = subprocess.run(["sacct", "-n", "-X", "-P", "-j", new_array, "-o", "JobID,State"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.split()
        return rows if rows and not any(r.endswith(("|RUNNING", "|PENDING", "|COMPLETING")) for r in rows) else None

    rows = wait_until(accounted, 60, "the resumed job's end state in sacct")
    assert len(rows) == 1 and rows[0].endswith("|COMPLETED"), rows
    after = {d.name: read_metrics(d) for d in run_dirs(sweep)}
    assert {m["status"] for m in after.values()} == {"completed"}
    for name, m in before.items():
        if m["status"] == "completed":
            assert after[name]["finished_at"] == m["finished_at"], "a completed job is not run again"
    again = after[job_dir.name]
    assert again["resumes"] and again["resumes"][0]["epoch"] >= 2, "it went on from its checkpoint"
    assert len(again["history"]) == 300
    assert "4 of 4 jobs completed" in resumed.stderr
    print(f"slurm flow: first launch with the cancel {first_s:.0f}s, resume {time.monotonic() - t1:.0f}s")


# ---------------------------------------------------------------- pending for ever, Ctrl-C

def test_a_request_no_node_can_give_is_named_and_ctrl_c_leaves_the_jobs_running(
        on_slurm, cli, cache_dir: Path, data_root: Path, tmp_path: Path) -> None:
    args = ["train", "-m", *LAUNCH, "hydra.launcher.cpus_per_task=64", "model.pool=max,avg", *TINY]
    proc = start(tmp_path, cache_dir, data_root, *args)
    out = Output(proc)
    array = None
    try:
        wait_until(lambda: "pending: PartitionConfig" in out.text, 120, "the PartitionConfig warning", proc, out)
        array = wait_until(lambda: next((line.split()[3].rstrip(":") for line in out.lines
                                         if line.startswith("SLURM array job")), None), 10, "the array id")
        proc.send_signal(signal.SIGINT)
        finish(proc, out, 60)
        assert proc.returncode == 130, out.text
        text = out.text
        assert "Traceback" not in text, text
        (paragraph,) = [line for line in text.splitlines() if line.startswith("error:")]
        assert f"array job {array}" in paragraph and "go on in SLURM" in paragraph
        assert f"scancel {array}" in paragraph and "resume=true" in paragraph
        assert "cpus_per_task" in text and f"scancel {array}" in text  # the warning named what to change
        assert squeue("-j", array).strip(), "Ctrl-C stopped the waiting, not the jobs"

        again = cli(*args, "resume=true")  # while they still queue: not submitted twice
        assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
        (refused,) = [line for line in again.stderr.splitlines() if line.startswith("error:")]
        assert refused.startswith("error: resume: SLURM still runs or queues jobs of this sweep")
        assert f"scancel {array}" in refused
        assert len(list(tmp_path.glob("outputs/multirun/*"))) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        if array:
            subprocess.run(["scancel", array], timeout=30)


# ---------------------------------------------------------------- sbatch refuses

def test_a_gpu_request_on_a_node_without_gpus_is_one_paragraph(on_slurm, cli, tmp_path: Path) -> None:
    proc = cli("train", "-m", "hydra/launcher=slurm", "model.pool=max,avg", *TINY)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.strip()
                    and not line.startswith("[")]  # Hydra's own log lines of the launch aside
    assert paragraph.startswith("error: hydra.launcher: sbatch refused")
    assert "gres" in paragraph and "hydra.launcher.gpus_per_node" in paragraph and "slurm_cpu" in paragraph
    assert not list(tmp_path.glob("outputs/multirun/*")), "nothing ran: nothing left behind"


# ---------------------------------------------------------------- the controller goes silent

def test_a_controller_that_stops_answering_ends_the_waiting(on_slurm, cache_dir: Path, data_root: Path,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """slurmctld frozen (SIGSTOP) while the jobs run: squeue times out, sacct (slurmdbd)
    still answers with stale states, so submitit would wait for ever. The sweep stops
    after SAMPLER_SLURM_UNREACHABLE_S with the paragraph; the controller then resumes."""
    pid = int((STATE / "pids" / "slurmctld").read_text())
    monkeypatch.setenv("SAMPLER_SLURM_UNREACHABLE_S", "10")
    args = ["train", "-m", *LAUNCH, "model.pool=max,avg", "trainer.epochs=2000",
            *[o for o in TINY if not o.startswith("trainer.epochs")]]
    proc = start(tmp_path, cache_dir, data_root, *args)
    out = Output(proc)
    array, frozen = None, False
    try:
        array = wait_until(lambda: next((line.split()[3].rstrip(":") for line in out.lines
                                         if line.startswith("SLURM array job")), None), 120, "the array id", proc, out)
        wait_until(lambda: squeue("-t", "R", "-j", array).strip(), 120, "a running task", proc, out)
        os.kill(pid, signal.SIGSTOP)
        frozen = True
        finish(proc, out, 180)
        assert proc.returncode == 1, out.text
        assert "Traceback" not in out.text, out.text
        (paragraph,) = [line for line in out.text.splitlines() if line.startswith("error:")]
        assert paragraph.startswith("error: slurm: SLURM has not answered for ") and f"array job {array}" in paragraph
        assert f"squeue -j {array}" in paragraph and "resume=true" in paragraph
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        if array:
            subprocess.run(["scancel", array], timeout=60)
