"""Robust sweeps: failures recorded, killed jobs resumed, no shared directories,
launchers that divide the cores. Every job here really runs (tiny, on CIFAR-10),
really fails or is really killed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


from conftest import TINY, read_metrics, run_dirs

from sampler.experiments.train.env import available_cpus
from sampler.experiments.runs.hparams import hparam_schema
from sampler.experiments.runs.sweep import claim, job_dir_name, new_sweep_dir


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "multirun").iterdir())


def by_pool(root: Path) -> dict[str, dict]:
    return {read_metrics(d)["config"]["model"]["pool"]: read_metrics(d) for d in run_dirs(root)}


def start(cwd: Path, cache_dir: Path, data_root: Path, *args: str) -> subprocess.Popen:
    """`sampler ARGS...` in the background, in its own process group (to kill it whole)."""
    env = {**os.environ, "SAMPLER_DATA": str(data_root), "SAMPLER_CACHE": str(cache_dir), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "sampler.cli.app", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


# ---------------------------------------------------------------- failures

def by_subset(root: Path) -> dict[int, dict]:
    return {read_metrics(d)["config"]["data"]["subset"]: read_metrics(d) for d in run_dirs(root)}


# A job that fails in its own run: data.subset is checked against the data when it is read,
# so the sweep's check (before any job) cannot refuse it.
FAILS_IN_ITS_RUN = ["data.subset=200,99990", *(o for o in TINY if not o.startswith("data.subset="))]


def test_a_failing_job_is_recorded_and_the_others_still_run(cli, tmp_path: Path) -> None:
    proc = cli("train", "-m", *FAILS_IN_ITS_RUN, "seed=0")
    assert proc.returncode == 1, proc.stderr
    (sweep,) = sweep_dirs(tmp_path)
    runs = by_subset(sweep)
    assert runs[200]["status"] == "completed" and runs[200]["test/acc"] > 0
    assert runs[99990]["status"] == "failed"
    assert "data.subset: 99990 must be a multiple of the 10 classes" in runs[99990]["error"]
    assert "1 of 2 jobs completed" in proc.stderr
    assert "failed" in proc.stderr and "data.subset=99990" in proc.stderr
    summary = (sweep / "summary.md").read_text()
    assert "| **data.subset=200** (best) | 1 |" in summary and "1 failed" in summary


# ---------------------------------------------------------------- kill, then resume

def test_a_killed_sweep_resumes_skipping_completed_jobs(cli, cache_dir: Path, data_root: Path, tmp_path: Path) -> None:
    args = ["train", "-m", "model.pool=max,avg", "seed=0", *TINY]
    proc = start(tmp_path, cache_dir, data_root, *args)
    try:  # kill the sweep as soon as its second job has started
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("outputs/multirun/*/*model.pool=avg*/metrics.json")):
            assert proc.poll() is None, f"the sweep ended before it could be killed:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "the second job never started"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    (sweep,) = sweep_dirs(tmp_path)
    before = by_pool(sweep)
    assert before["max"]["status"] == "completed"
    assert before["avg"]["status"] == "running", "SIGKILL leaves no chance to record an end status"

    from typer.testing import CliRunner

    from sampler.cli.app import app

    shown = CliRunner().invoke(app, ["compare", str(sweep), "--format", "json"])
    assert shown.exit_code == 0, shown.stderr
    assert [u["status"] for u in json.loads(shown.stdout)["unfinished"]] == ["killed"], "its pid is gone"

    # The threads and progress bar may differ from the launch's; other values may not.
    changed = cli("train", "-m", f"resume={sweep.relative_to(tmp_path)}", "trainer.epochs=2", "model.pool=max",
                  "model.act=gelu")
    assert changed.returncode == 2 and "Traceback" not in changed.stderr, changed.stderr
    said = " ".join(changed.stderr.split())
    assert "trainer.epochs=1 then, trainer.epochs=2 now" in said and "model.act=gelu added" in said, said
    assert "model.pool=max,avg then, model.pool=max now" in said
    assert len(run_dirs(sweep)) == 2 and "trainer.epochs=2" not in (sweep / "multirun.yaml").read_text()
    assert by_pool(sweep)["avg"]["status"] == "running", "nothing ran"

    resumed = cli(*args, "resume=true", "trainer.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert sweep_dirs(tmp_path) == [sweep], "resume continues the same sweep dir"
    assert "skipped (resume)" in resumed.stdout + resumed.stderr
    after = by_pool(sweep)
    assert after["max"]["finished_at"] == before["max"]["finished_at"], "a completed job is not rerun"
    assert after["avg"]["status"] == "completed"
    avg_dir = next(d for d in run_dirs(sweep) if "model.pool=avg" in d.name)
    assert len(list(avg_dir.glob("events.out.tfevents.*"))) == 1, "the killed attempt's events are dropped"
    assert "2 of 2 jobs completed" in resumed.stderr

    # A sweep dir named alone: the overrides it was launched with apply again.
    again = cli("train", "-m", f"resume={sweep.relative_to(tmp_path)}")
    assert again.returncode == 0 and (again.stdout + again.stderr).count("skipped (resume)") == 2, again.stderr
    assert len(run_dirs(sweep)) == 2


def test_resume_of_a_path_that_is_no_sweep_is_a_user_error(cli, tmp_path: Path) -> None:
    proc = cli("train", "-m", "model.pool=max", "resume=elsewhere")
    assert proc.returncode == 2
    assert "error: resume: elsewhere is not a sweep directory" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "elsewhere").mkdir()
    single = cli("train", "resume=elsewhere")
    assert single.returncode == 2 and "not a run directory" in single.stderr


# ---------------------------------------------------------------- directories

def test_two_sweeps_launched_at_once_get_their_own_dirs(cache_dir: Path, data_root: Path, tmp_path: Path) -> None:
    args = ["train", "-m", "model.pool=max", "seed=0", *TINY]
    procs = [start(tmp_path, cache_dir, data_root, *args) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    sweeps = sweep_dirs(tmp_path)
    assert len(sweeps) == 2
    for sweep in sweeps:
        (run,) = run_dirs(sweep)
        assert read_metrics(run)["status"] == "completed"


def test_sweep_dirs_made_in_the_same_instant_differ(tmp_path: Path) -> None:
    instant = datetime(2030, 1, 2, 3, 4, 5, 678901)
    first, second = (new_sweep_dir(tmp_path, now=lambda: instant) for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name == "2030-01-02_03-04-05.678901"


def test_job_dir_names_come_from_the_overrides_alone() -> None:
    assert job_dir_name("model.pool=avg,seed=1") == "model.pool=avg,seed=1"
    assert job_dir_name("") == "default"
    long = ",".join(f"key{i}=value{i}" for i in range(40))
    name = job_dir_name(long)
    assert len(name.encode()) <= 200 and name == job_dir_name(long) and name != job_dir_name(long + "x")


def test_a_job_dir_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    with claim(tmp_path) as first:
        with claim(tmp_path) as second:
            assert first and not second
    with claim(tmp_path) as later:
        assert later


# ---------------------------------------------------------------- launchers

def test_joblib_divides_the_cores_between_parallel_jobs(cli, tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith("trainer.threads")]  # threads=null: auto
    proc = cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.pool=max,avg",
               "seed=0", *overrides)
    assert proc.returncode == 0, proc.stderr
    (sweep,) = sweep_dirs(tmp_path)
    runs = by_pool(sweep)
    assert {m["status"] for m in runs.values()} == {"completed"}
    assert {m["threads"] for m in runs.values()} == {max(1, available_cpus() // 2)}
    assert (sweep / "summary.md").is_file()


def test_submitit_local_runs_the_slurm_code_path(cli, tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith("trainer.threads")]
    proc = cli("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "seed=0",
               *(o for o in FAILS_IN_ITS_RUN if o in overrides or o.startswith("data.subset=")))
    assert proc.returncode == 1, proc.stderr  # the 99990 job fails in its own process, the sweep goes on
    (sweep,) = sweep_dirs(tmp_path)
    assert (sweep / ".submitit").is_dir()
    runs = by_subset(sweep)
    assert runs[200]["status"] == "completed" and runs[200]["threads"] == 1
    assert runs[99990]["status"] == "failed" and "data.subset=99990" in proc.stderr


def test_the_slurm_example_config_composes(cli) -> None:
    proc = cli("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", check=True)
    assert "SlurmLauncher" in proc.stdout and "partition: gpu" in proc.stdout
    assert "gpus_per_node: 1" in proc.stdout and "timeout_min:" in proc.stdout


# ---------------------------------------------------------------- HParams schema

def test_every_job_writes_one_type_per_hparam_key() -> None:
    schema = hparam_schema()
    assert schema["optim.momentum"] == "string", "sgd has it, adamw does not: 'none' there"
    assert schema["optim.betas"] == "string" and schema["optim.lr"] == "number"
    assert schema["trainer.channels_last"] == "bool" and schema["trainer.epochs"] == "number"
    assert schema["model.pool"] == "string" and "resume" not in schema


def test_startup_clock_counts_later_jobs_of_a_process_from_their_own_start(monkeypatch) -> None:
    # A sweep's basic launcher runs every job in one process: only its first job pays the imports.
    from sampler.experiments.train import runner

    monkeypatch.setattr(runner._StartupClock, "first_job_done", False)
    first, second = runner._StartupClock(), runner._StartupClock()
    assert first.first and not second.first
    assert second.seconds() < first.seconds()  # the pytest process started long before `second`
