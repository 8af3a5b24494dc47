"""Launchers and sweepers without a cluster: how SLURM's ends land in metrics.json, the pending
reasons that deserve a warning, sbatch's refusals (a real `sbatch` stand-in on PATH), GPUs for
parallel local jobs, and Hydra's Optuna sweeper on the generated tiny data. The real SLURM
cluster is tests/test_slurm.py (-m slurm)."""
from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from conftest import TINY, read_metrics, run_dirs

from sampler.experiments.runs import launchers
from sampler.experiments.runs.launchers import PendingWatcher, record_slurm_end, sbatch_refusal, slurm_status
from sampler.experiments.runs.read import read_run
from sampler.experiments.runs.sweep import trial_dir_name


# ---------------------------------------------------------------- SLURM's end states

def test_slurm_end_states_become_statuses() -> None:
    assert slurm_status("CANCELLED by 0") == slurm_status("CANCELLED+") == "cancelled"
    assert slurm_status("TIMEOUT") == slurm_status("DEADLINE") == "timeout"
    assert slurm_status("FAILED") == slurm_status("OUT_OF_MEMORY") == slurm_status("NODE_FAIL") == "failed"
    assert slurm_status("") == "failed"


def test_a_job_that_never_started_gets_a_metrics_json_the_summary_reads(tmp_path: Path) -> None:
    job = tmp_path / "model.pool=avg"
    config = {"seed": 1, "task": {"name": "classification"}, "model": {"pool": "avg"}}
    assert record_slurm_end(job, "CANCELLED by 0", "12_3", job_config=config,
                            overrides=["model.pool=avg", "seed=1"]) == "cancelled"
    run = read_run(job)
    assert run.status == "cancelled" and run.seed == 1 and run.config["model.pool"] == "avg"
    assert run.error.startswith("SLURM job 12_3 ended CANCELLED by 0") and "resume=true" in run.error
    assert read_metrics(job)["slurm"] == {"job_id": "12_3", "state": "CANCELLED by 0"}


def test_a_started_job_keeps_its_history_and_says_what_it_had_recorded(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({
        "status": "interrupted", "history": [{"epoch": 1}, {"epoch": 2}],
        "error": "SIGTERM: the run stopped at epoch 3 and saved checkpoint.pt there; continue it with ..."}))
    assert record_slurm_end(tmp_path, "TIMEOUT", "7_0") == "timeout"
    m = read_metrics(tmp_path)
    assert m["status"] == "timeout" and len(m["history"]) == 2
    assert "hydra.launcher.timeout_min" in m["error"] and "max_num_timeout" in m["error"]
    assert m["error"].endswith("the run had recorded interrupted: SIGTERM: the run stopped at epoch 3 and "
                               "saved checkpoint.pt there"), "its first clause only"


def test_a_run_that_recorded_its_own_failure_or_completion_keeps_it(tmp_path: Path) -> None:
    failed, completed = tmp_path / "a", tmp_path / "b"
    failed.mkdir(), completed.mkdir()
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "ValueError: boom"}))
    (completed / "metrics.json").write_text(json.dumps({"status": "completed", "error": None}))
    assert record_slurm_end(failed, "FAILED", "7_1", log_path=Path("x/7_1_0_log.err")) == "failed"
    assert read_metrics(failed)["error"].startswith("ValueError: boom (SLURM job 7_1 ended FAILED")
    assert "x/7_1_0_log.err" in read_metrics(failed)["error"]
    assert record_slurm_end(completed, "CANCELLED by 0", "7_2") == "completed"
    assert read_metrics(completed) == {"status": "completed", "error": None}
    assert record_slurm_end(tmp_path / "c", "OUT_OF_MEMORY", "7_3") == "failed"
    assert "hydra.launcher.mem_gb" in read_metrics(tmp_path / "c")["error"]


# ---------------------------------------------------------------- pending for ever

def test_permanent_pending_reasons_are_warned_about_once(capsys: pytest.CaptureFixture) -> None:
    watcher = PendingWatcher("12")
    said = watcher.check("12_[0-3%2]|PartitionConfig\n12_4|Priority\n12_5|Resources\n")
    assert len(said) == 1 and "12_[0-3%2] pending: PartitionConfig" in said[0]
    assert "cpus_per_task" in said[0] and "scancel 12" in said[0]
    assert said[0] in capsys.readouterr().err
    assert watcher.check("12_[0-3%2]|PartitionConfig\n") == [], "said once"
    (nodes,) = watcher.check("12_6|ReqNodeNotAvail, UnavailableNodes:node[1-2]\n")
    assert "down, drained or reserved" in nodes
    assert watcher.check("12_7|JobArrayTaskLimit\n12_8|Dependency\n") == [], "these end by themselves"
    assert launchers.permanent_reason("QOSMaxGRESPerJobLimit") and launchers.permanent_reason("Priority") is None


def _stand_ins(tmp_path: Path, **scripts: str) -> Path:
    """A bin folder of stand-in SLURM commands (`name=shell body`), for PATH's front."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return bin_dir


UNREACHABLE = "echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1"


def test_the_watcher_tells_a_silent_slurm_from_an_array_that_has_left_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _stand_ins(tmp_path, squeue=UNREACHABLE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    watcher = PendingWatcher("12", interval=0.05, first=0.0)
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while watcher.silent_for() < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.silent_for() >= 0.2 and "Unable to contact slurm controller" in watcher.last_error
        # Ended jobs leave squeue's memory: "Invalid job id" is an answer, and it resets the clock.
        _stand_ins(tmp_path, squeue="echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
        while watcher.silent_for() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.silent_for() == 0.0
    finally:
        watcher.stop()


def test_a_slurm_that_stops_answering_ends_the_waiting_in_one_paragraph(cli, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch accepts the array, then neither squeue nor sacct answer (the controller went
    down): the sweep stops after SAMPLER_SLURM_UNREACHABLE_S, saying how to collect the jobs."""
    bin_dir = _stand_ins(tmp_path, sbatch="echo 'Submitted batch job 4242'", squeue=UNREACHABLE,
                         sacct="echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SAMPLER_SLURM_UNREACHABLE_S", "2")
    proc = cli("train", "-m", "hydra/launcher=slurm_cpu", "model.pool=max,avg", *TINY, timeout=90)  # not for ever
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert paragraph.startswith("error: slurm: SLURM has not answered for ")
    assert "Unable to contact slurm controller" in paragraph and "array job 4242 (2 of 2 tasks" in paragraph
    assert "squeue -j 4242" in paragraph and "resume=true" in paragraph
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*")
    statuses = sorted(read_metrics(d)["status"] for d in run_dirs(sweep))
    assert statuses == ["pending", "pending"], "what is known: submitted, never seen to start"


# ---------------------------------------------------------------- sbatch refuses

@pytest.mark.parametrize("said, key", [
    ("sbatch: error: Invalid generic resource (gres) specification", "hydra.launcher.gpus_per_node"),
    ("sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: "
     "Invalid partition name specified", "hydra.launcher.partition"),
    ("sbatch: error: Memory specification can not be satisfied", "hydra.launcher.mem_gb"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
     "specified", "hydra.launcher.account"),
    ("sbatch: error: something new", "hydra.launcher.* (partition, gpus_per_node"),
])
def test_sbatch_refusals_name_the_launcher_key(said: str, key: str) -> None:
    e = sbatch_refusal(said)
    assert e.exit_code == 2 and e.key == "hydra.launcher" and key in e.message
    assert "sbatch: error" not in e.message and said.splitlines()[-1].split("error: ")[-1] in e.message


def test_sbatch_refusing_the_request_is_one_paragraph(cli, tmp_path: Path) -> None:
    """The CLI path with a stand-in `sbatch` that refuses like SLURM does (no cluster here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: Invalid generic resource (gres) specification' >&2\nexit 1\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    try:
        proc = cli("train", "-m", "hydra/launcher=slurm", "model.pool=max,avg", *TINY)
    finally:
        os.environ["PATH"] = path
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert paragraph.startswith("error: hydra.launcher: sbatch refused the sweep's jobs: Invalid generic resource")
    assert "hydra.launcher.gpus_per_node" in paragraph and "hydra/launcher=slurm_cpu" in paragraph
    assert not list((tmp_path / "outputs" / "multirun").glob("*")), "nothing ran: no sweep dir left"


def test_the_cpu_profile_asks_for_no_gpu(cli) -> None:
    proc = cli("train", "hydra/launcher=slurm_cpu", "--cfg", "hydra", check=True)
    assert "_target_: hydra_plugins.sampler.SlurmLauncher" in proc.stdout
    assert "gpus_per_node: null" in proc.stdout and "cpus_per_task: 2" in proc.stdout
    assert "mem_gb: 4" in proc.stdout and "array_parallelism: 8" in proc.stdout
    gpu = cli("train", "hydra/launcher=slurm", "--cfg", "hydra", check=True)
    assert "gpus_per_node: 1" in gpu.stdout and "signal_delay_s: 120" in gpu.stdout


# ---------------------------------------------------------------- GPUs of parallel local jobs

def test_parallel_local_jobs_take_the_gpus_in_turn() -> None:
    from sampler.cli.task import gpu_for_job

    assert [gpu_for_job(n, ["0", "1", "2"]) for n in range(5)] == ["0", "1", "2", "0", "1"]
    assert [gpu_for_job(n, ["3", "5"]) for n in range(3)] == ["3", "5", "3"], "CUDA_VISIBLE_DEVICES' own ids"
    assert gpu_for_job(4, ["0"]) is None and gpu_for_job(0, []) is None, "one GPU or none: left alone"


def test_only_local_parallel_launchers_pin_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from sampler.cli import task

    monkeypatch.setenv(task.GPUS_ENV, "0,1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def pinned(launcher: dict, num: int) -> str | None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        task._pin_gpu(OmegaConf.create({"launcher": launcher, "job": {"num": num}}))
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert pinned({"_target_": joblib, "n_jobs": 2}, 3) == "1"
    assert pinned({"_target_": local, "cpus_per_task": 1}, 2) == "0"
    assert pinned({"_target_": joblib, "n_jobs": 1}, 1) is None, "one job at a time"
    assert pinned({"_target_": "hydra_plugins.sampler.SlurmLauncher", "cpus_per_task": 1}, 1) is None, \
        "SLURM gives each job its GPUs"
    assert pinned({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1) is None


def test_ray_jobs_share_the_cores_like_joblib_jobs() -> None:
    from omegaconf import OmegaConf

    from sampler.cli.task import _parallel_jobs
    from sampler.experiments.train.env import available_cpus

    ray = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    one_each = OmegaConf.create({"launcher": {"_target_": ray, "ray": {"init": {}, "remote": {}}}})
    two_each = OmegaConf.create({"launcher": {"_target_": ray, "ray": {"remote": {"num_cpus": 2}}}})
    assert _parallel_jobs(one_each) == available_cpus(), "a Ray task reserves one core unless told"
    assert _parallel_jobs(two_each) == max(1, available_cpus() // 2)


# ---------------------------------------------------------------- Optuna

def test_trial_dirs_put_the_trial_number_first() -> None:
    assert trial_dir_name(3, "model.pool=avg") == "trial=3,model.pool=avg"
    assert trial_dir_name(0, "") == "trial=0"
    assert len(trial_dir_name(12345, ",".join(f"k{i}=v{i}" for i in range(60))).encode()) <= 255


needs_optuna = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper is not installed (pip install -e '.[test]')")
OPTUNA = ["train", "-m", "hydra/sweeper=optuna_study", "hydra.sweeper.sampler.seed=0", *TINY]


def study(sweep: Path):
    import warnings

    with warnings.catch_warnings():  # optuna 2's SQLAlchemy 1.4 models, said at its import
        warnings.filterwarnings("ignore", message="Deprecated API features detected")
        import optuna

        return optuna.load_study(study_name="sampler", storage=f"sqlite:///{sweep / 'optuna.db'}")


@needs_optuna
def test_an_optuna_study_maximises_the_headline_with_a_dir_per_trial(cli, tmp_path: Path) -> None:
    proc = cli(*OPTUNA, "hydra.sweeper.n_trials=3", "model.pool=choice(max,avg)")
    assert proc.returncode == 0, proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    dirs = run_dirs(sweep)
    assert sorted(d.name.split(",")[0] for d in dirs) == ["trial=0", "trial=1", "trial=2"]
    pools = [read_metrics(d)["config"]["model"]["pool"] for d in dirs]
    assert len(set(pools)) < len(pools), "three trials of two choices: two drew the same, each has its own dir"
    trials = study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    by_dir = {d.name.split(",")[0]: read_metrics(d)["val/acc_best"] for d in dirs}
    assert [t.value for t in trials] == [by_dir[f"trial={t.number}"] for t in trials], "the headline, validation"
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {max(by_dir.values())}" in best
    assert (sweep / "summary.md").is_file() and (sweep / "multirun.yaml").is_file()


@needs_optuna
def test_failed_trials_are_told_as_failed_and_an_interrupted_study_resumes(cli, tmp_path: Path) -> None:
    # BatchNorm at batch 1 is refused in the trial's own run (fine with norm=none or batch 50)
    args = [*(a for a in OPTUNA if not a.startswith("trainer.batch_size=")), "model.norm=choice(batch,none)",
            "trainer.batch_size=choice(1,50)"]
    proc = cli(*args, "hydra.sweeper.n_trials=4")
    assert proc.returncode == 1, proc.stderr  # a sweep with failed jobs exits 1; the study went on
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    states = {t.number: t.state.name for t in study(sweep).trials}
    assert sorted(states.values()).count("FAIL") >= 1 and "COMPLETE" in states.values(), states
    failed = [n for n, s in states.items() if s == "FAIL"]
    assert f"trial {failed[0]}: failed: refused: trainer.batch_size: BatchNorm" in proc.stdout + proc.stderr
    assert "float-castable" not in proc.stdout + proc.stderr

    interrupted = study(sweep).ask()  # what a killed study leaves: a trial RUNNING for ever
    assert interrupted.number == 4
    resumed = cli(*args, "hydra.sweeper.n_trials=5", "resume=true")
    assert (tmp_path / "outputs" / "multirun").iterdir().__next__() == sweep
    trials = study(sweep).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5], "only the one trial still missing ran"
    assert trials[4].state.name == "FAIL", "the interrupted trial counts as failed"
    assert "4 finished trials (1 left running by an interrupted sweep: failed now); 1 more to run" in \
        resumed.stdout + resumed.stderr
    assert len(run_dirs(sweep)) == 5 and any(d.name.startswith("trial=5,") for d in run_dirs(sweep))


@needs_optuna
def test_a_study_where_every_trial_fails_ends_with_one_paragraph(cli, tmp_path: Path) -> None:
    # more images than the data has: found when a trial reads its data, after the sweep's check
    proc = cli(*(a for a in OPTUNA if not a.startswith("data.subset=")), "hydra.sweeper.n_trials=2",
               "data.subset=choice(99980,99990)")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "No trials are completed yet" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hydra.sweeper: no trial of the study completed with a value to optimise")
    assert "resume=true" in last and "0 of 2 jobs completed" in proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert "2 failed" in (sweep / "summary.md").read_text() or "failed" in (sweep / "summary.md").read_text()


def test_a_queued_job_shows_as_pending_until_it_starts(tmp_path: Path, capsys) -> None:
    """Submit and come back later: compare and the summary show queued jobs as pending."""
    from sampler.experiments.analysis.summary import last_sweep, summarize
    from sampler.experiments.runs.launchers import mark_pending
    from sampler.experiments.runs.read import find_runs

    queued, started = tmp_path / "model.pool=avg", tmp_path / "model.pool=max"
    started.mkdir()
    (started / "metrics.json").write_text('{"status": "running", "history": [], "config": {"seed": 0}}')
    mark_pending(queued, "41_1", ["model.pool=avg"])
    mark_pending(started, "41_0", ["model.pool=max"])  # a job that already wrote its own is left alone
    runs = {r.name: r for r in find_runs([tmp_path])}
    assert runs["model.pool=avg"].status == "pending" and "41_1" in runs["model.pool=avg"].error
    assert json.loads((started / "metrics.json").read_text())["status"] == "running"
    summarize(tmp_path)
    assert last_sweep["failed"] == []  # queued is not failed
    assert "pending" in capsys.readouterr().err
