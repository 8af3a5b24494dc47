"""A sweep on SLURM that ends truthfully: `hydra/launcher=slurm` and `slurm_cpu`.

`SlurmLauncher` is hydra-submitit-launcher's, changed where a sweep on a real cluster
otherwise ends in a traceback or waits on the wrong thing (DESIGN §8-9):

- `resume=...` leaves out the jobs whose directory already holds a completed
  metrics.json before anything is submitted, and returns their stored results;
- it waits for every task of the array (submitit's launcher raises at the first that
  did not complete and leaves the rest unaccounted for);
- a task SLURM cancelled, timed out or failed gets that in its metrics.json (`status`
  cancelled, timeout or failed, the SLURM state in `error` and `slurm`), so the
  sweep's summary lists it and the sweep exits 1 like any failed job;
- sbatch refusing the request, and Ctrl-C while the jobs run, end the sweep with one
  paragraph (`SweepAborted`): the launcher keys to change; or that the jobs go on,
  how to cancel them and how to collect them;
- a watcher thread warns when SLURM keeps tasks pending for a reason that waiting
  will not change (`squeue -o %r`: PartitionConfig, ReqNodeNotAvail, ...);
- a SLURM that stops answering (its controller down or unreachable) ends the waiting
  after `SAMPLER_SLURM_UNREACHABLE_S` seconds, 600 by default, with one paragraph: what
  is known of the jobs, and how to collect them once SLURM is back. submitit only warns
  about each failed sacct call, so the sweep would otherwise wait for ever.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from . import sweep
from .atomic import write_json

log = logging.getLogger("sampler")

# squeue's pending reasons that waiting does not change: the request exceeds what the
# partition or the account allows, or names nodes that are not there. What to change.
PERMANENT_PENDING = {
    "PartitionConfig": "the request (cpus_per_task, mem_gb, gpus_per_node or timeout_min) is more than any "
                       "node of the partition has",
    "PartitionNodeLimit": "more nodes than the partition allows (nodes)",
    "PartitionTimeLimit": "timeout_min is above the partition's time limit",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "BadConstraints": "no node has the constraint asked for (constraint)",
    "InvalidAccount": "the account is not valid (account)",
    "InvalidQOS": "the QOS is not valid (qos)",
    "AccountNotAllowed": "the account may not use this partition (account, partition)",
    "QOSNotAllowed": "the QOS may not use this partition (qos, partition)",
    "DependencyNeverSatisfied": "a dependency can never be satisfied",
    "JobHeldAdmin": "an administrator holds it",
    "JobHeldUser": "it is held (scontrol release)",
}
LAUNCHER_KEYS = "partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min, account, qos"


def say(message: str) -> None:
    """The launching process's own lines, on stderr beside the sweep summary."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- SLURM states into metrics.json

def slurm_status(state: str) -> str:
    """metrics.json's status for a SLURM end state: cancelled, timeout or failed."""
    word = (state.split() or ["UNKNOWN"])[0].upper()
    if word.startswith("CANCELLED"):
        return "cancelled"
    if word in ("TIMEOUT", "DEADLINE"):
        return "timeout"
    return "failed"


def _why(state: str, job_id: str, log_path: Path | None) -> str:
    word = (state.split() or ["UNKNOWN"])[0].upper()
    advice = {
        "CANCELLED": "it was cancelled (scancel, or an administrator)",
        "TIMEOUT": "it reached its time limit: raise hydra.launcher.timeout_min, or let submitit requeue it "
                   "(hydra.launcher.max_num_timeout)",
        "DEADLINE": "it reached its deadline",
        "OUT_OF_MEMORY": "it ran out of memory: raise hydra.launcher.mem_gb",
        "NODE_FAIL": "its node failed",
        "BOOT_FAIL": "its node failed to boot",
        "PREEMPTED": "it was preempted and not requeued",
    }.get(word.rstrip("+"), "it failed" + (f" (its log: {log_path})" if log_path else ""))
    return (f"SLURM job {job_id} ended {state}: {advice}; resume=true runs it again "
            "(from its checkpoint when it has one)")


def record_slurm_end(job_dir: Path, state: str, job_id: str, log_path: Path | None = None,
                     job_config: dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> str:
    """Write how SLURM ended an unfinished job into its metrics.json (made when the job
    never started); a run that recorded its own failure keeps its error. Returns the status."""
    path = Path(job_dir) / "metrics.json"
    status = slurm_status(state)
    message = _why(state, job_id, log_path)
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        metrics = None
    if metrics is None:
        config = job_config or {}
        metrics = {"status": status, "error": message, "seed": config.get("seed"), "overrides": list(overrides),
                   "task": (config.get("task") or {}).get("name"), "config": config or None, "history": []}
    elif metrics.get("status") == "completed":  # its work was done before SLURM ended it
        return "completed"
    else:
        earlier, error = metrics.get("status"), metrics.get("error")
        if earlier in ("failed", "diverged") and status == "failed":
            status, message = earlier, f"{error} ({message})"
        elif earlier not in (None, "running", "pending"):  # how the run saw its end (SIGTERM, a checkpoint): first clause
            message += f"; the run had recorded {earlier}: {str(error).split(';')[0]}"
        metrics.update(status=status, error=message)
    metrics["slurm"] = {"job_id": job_id, "state": state}
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    write_json(path, metrics)
    return status


def mark_pending(job_dir: Path, job_id: str, overrides: Sequence[str]) -> None:
    """A queued job's metrics.json says `pending` until the job starts and writes its own,
    so `sampler compare <sweep>` shows it as such after the launching process let go
    (submit and come back later). Created only where none exists: a job that already
    started is never overwritten."""
    path = Path(job_dir) / "metrics.json"
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        json.dump({"status": "pending", "error": f"queued in SLURM as job {job_id} (squeue -j {job_id})",
                   "overrides": list(overrides), "config": None, "history": [],
                   "slurm": {"job_id": job_id, "state": "PENDING"}}, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- pending for ever

def permanent_reason(reason: str) -> str | None:
    """Why waiting will not help, for a squeue pending reason; None when it will."""
    word = reason.split(",")[0].strip()
    if word in PERMANENT_PENDING:
        return PERMANENT_PENDING[word]
    if word.endswith("PerJobLimit"):
        return "one job asks for more than the QOS or association allows per job"
    if word.startswith("launch failed"):
        return "the launch failed and SLURM holds it"
    return None


class PendingWatcher(threading.Thread):
    """Asks squeue, every `interval` seconds, why the array's tasks are pending, and
    warns once per reason that waiting will not change."""

    def __init__(self, array_id: str, interval: float = 15.0, first: float = 3.0):
        super().__init__(name=f"pending-{array_id}", daemon=True)
        self.array_id, self.interval, self.first = array_id, interval, first
        self.stopped = threading.Event()
        self.warned: set[str] = set()
        self.unanswered_since: float | None = None  # monotonic time of the first failed squeue since an answer
        self.last_error = ""  # what that failure said

    def run(self) -> None:
        wait = self.first
        while not self.stopped.wait(wait):
            wait = self.interval
            try:
                proc = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i|%r", "-j", self.array_id],
                                      capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as e:
                self.unanswered(f"{type(e).__name__}: {e}")
                continue
            # "Invalid job id": SLURM answered, the array has left its memory (all ended)
            if proc.returncode and "invalid job id" not in proc.stderr.lower():
                lines = proc.stderr.strip().splitlines()
                self.unanswered(lines[-1] if lines else f"squeue exited {proc.returncode}")
                continue
            self.unanswered_since = None
            self.check(proc.stdout)

    def unanswered(self, error: str) -> None:
        if self.unanswered_since is None:
            self.unanswered_since = time.monotonic()
        self.last_error = error

    def silent_for(self) -> float:
        """Seconds since SLURM last failed to answer after answering; 0 while it answers."""
        since = self.unanswered_since
        return 0.0 if since is None else time.monotonic() - since

    def check(self, squeue_output: str) -> list[str]:
        """Warn about the permanent reasons in `squeue -o '%i|%r'` output; the warnings said."""
        tasks: dict[str, list[str]] = {}
        for line in squeue_output.splitlines():
            task, _, reason = line.partition("|")
            if reason and permanent_reason(reason):
                tasks.setdefault(reason.strip(), []).append(task.strip())
        said = []
        for reason, ids in tasks.items():
            if reason in self.warned:
                continue
            self.warned.add(reason)
            said.append(f"warning: SLURM keeps {', '.join(ids)} pending: {reason}: {permanent_reason(reason)}. "
                        f"Waiting will not change that: stop it with `scancel {self.array_id}`, change "
                        f"hydra.launcher.* ({LAUNCHER_KEYS}; `sinfo -o '%P %c %m %G %l'` shows what the "
                        "partitions offer) and launch again")
            say(said[-1])
        return said

    def stop(self) -> None:
        self.stopped.set()


# ---------------------------------------------------------------- the launcher

def sbatch_refusal(error: str) -> sweep.SweepAborted:
    """sbatch's refusal as one paragraph naming the launcher keys to change (exit 2)."""
    lines = [line.replace("sbatch: error: ", "").strip() for line in error.splitlines() if line.strip()]
    said = "; ".join(dict.fromkeys(lines)) or "no reason given"
    low = said.lower()
    if "account" in low or "qos" in low or "association" in low:
        keys = "hydra.launcher.account or hydra.launcher.qos (`sacctmgr show assoc user=$USER` lists yours)"
    elif "partition" in low:
        keys = "hydra.launcher.partition (`sinfo -s` lists the partitions; null = the cluster's default)"
    elif "gres" in low or "generic resource" in low:
        keys = ("hydra.launcher.gpus_per_node (this partition has no GPUs: set it to null, or use "
                "hydra/launcher=slurm_cpu; or choose a GPU partition with hydra.launcher.partition)")
    elif "memory" in low:
        keys = "hydra.launcher.mem_gb (`sinfo -o '%P %m'` shows each partition's memory per node, in MB)"
    elif "time limit" in low:
        keys = "hydra.launcher.timeout_min (`sinfo -o '%P %l'` shows each partition's limit)"
    else:
        keys = (f"hydra.launcher.* ({LAUNCHER_KEYS}; `sinfo -o '%P %c %m %G %l'` shows what the partitions "
                "offer)")
    return sweep.SweepAborted("hydra.launcher", f"sbatch refused the sweep's jobs: {said}. Change {keys}; "
                              "`sampler train -m hydra/launcher=... --cfg hydra` prints the request", 2)


def _drop_if_unused(sweep_dir: Path) -> None:
    """A sweep dir that holds nothing but Hydra's and submitit's launch files: nothing ran, leave nothing."""
    if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml", ".submitit"}:
        shutil.rmtree(sweep_dir, ignore_errors=True)


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher, changed as the module says."""

    poll_s = 30.0  # most seconds between two sacct calls while waiting (submitit's own reach 10 min)
    pending_check_s = 15.0  # seconds between two squeue calls for pending reasons

    @staticmethod
    def unreachable_s() -> float:
        """How long SLURM may leave squeue unanswered before the sweep stops waiting; 0 = for ever."""
        value = os.environ.get("SAMPLER_SLURM_UNREACHABLE_S", "600")
        try:
            return max(0.0, float(value))
        except ValueError:
            raise sweep.SweepAborted("SAMPLER_SLURM_UNREACHABLE_S", f"{value!r} must be a number of seconds "
                                     "(0: wait for ever)", 2) from None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        jobs = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        results: dict[int, JobReturn] = {}
        if self.config.get("resume"):
            for idx, overrides in jobs:
                stored = self._stored_result(sweep_dir, idx, overrides)
                if stored is not None:
                    results[idx] = stored
            if results:
                say(f"resume: {len(results)} of {len(jobs)} jobs completed earlier and are not submitted again")
        todo = [(idx, overrides) for idx, overrides in jobs if idx not in results]
        if todo and self.config.get("resume"):
            self._refuse_while_running(sweep_dir)
        if todo:
            submitted = self._submit(sweep_dir, todo)
            results.update(self._wait(sweep_dir, submitted))
        return [results[idx] for idx, _ in jobs]

    @staticmethod
    def _refuse_while_running(sweep_dir: Path) -> None:
        """A resume while an earlier array of the sweep still runs would train its jobs twice."""
        earlier = sorted({p.name.split("_")[0] for p in sweep_dir.glob(".submitit/*") if p.is_dir()})
        if not earlier:
            return
        try:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(earlier)], capture_output=True,
                                 text=True, timeout=60).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return
        if out:
            arrays = " ".join(sorted({i.split("_")[0] for i in out}))
            raise sweep.SweepAborted("resume", f"SLURM still runs or queues jobs of this sweep ({', '.join(out)}), "
                                     "and submitting them again would train them twice. Wait until `squeue -j "
                                     f"{arrays.replace(' ', ',')}` shows none, or cancel them with `scancel "
                                     f"{arrays}`, then resume", 2)

    # ---------------------------------------------------------------- each job's config and directory

    def _job_config(self, idx: int, overrides: list[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        return cfg

    @staticmethod
    def _job_dir(sweep_dir: Path, cfg: DictConfig) -> Path:
        return sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))

    @contextlib.contextmanager
    def _as_job(self, cfg: DictConfig, job_dir: Path) -> Iterator[DictConfig]:
        """The job's config (without `hydra`) with HydraConfig set as inside the job; restored after."""
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.output_dir = str(job_dir)
            cfg.hydra.job.id = f"resumed_{cfg.hydra.job.num}"
        hydra_config = HydraConfig.instance()
        saved = hydra_config.cfg
        hydra_config.set_config(cfg)
        try:
            task_cfg = copy.deepcopy(cfg)
            with open_dict(task_cfg):
                del task_cfg["hydra"]
            yield task_cfg
        finally:
            hydra_config.cfg = saved

    def _stored_result(self, sweep_dir: Path, idx: int, overrides: list[str]) -> JobReturn | None:
        """A job an earlier attempt completed: its result, from the task function itself
        (which returns a completed job's objective without training), not resubmitted."""
        assert self.task_function is not None
        cfg = self._job_config(idx, overrides)
        job_dir = self._job_dir(sweep_dir, cfg)
        if sweep.completed_metrics(job_dir) is None:
            return None
        with self._as_job(cfg, job_dir) as task_cfg:
            value = self.task_function(task_cfg)
        return JobReturn(overrides=overrides, cfg=task_cfg, working_dir=str(job_dir),
                         task_name=str(cfg.hydra.job.name), status=JobStatus.COMPLETED, _return_value=value)

    # ---------------------------------------------------------------- submit, wait, collect

    def _executor(self) -> Any:
        """submitit's executor with the launcher's parameters, as the parent's launch() builds it."""
        import submitit

        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        return executor

    def _submit(self, sweep_dir: Path, todo: list[tuple[int, list[str]]]) -> list[tuple[int, list[str], Any]]:
        assert self.config is not None
        from submitit.core.utils import FailedJobError

        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        for idx, overrides in todo:
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        params = [(overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", state) for idx, overrides in todo]
        stderr = io.StringIO()  # submitit prints sbatch's complaint there too: said once, below
        try:
            with contextlib.redirect_stderr(stderr):
                jobs = self._executor().map_array(self, *zip(*params))
            sys.stderr.write(stderr.getvalue())
        except FailedJobError as e:
            _drop_if_unused(sweep_dir)
            raise sbatch_refusal(str(e) or stderr.getvalue()) from None
        except FileNotFoundError as e:
            raise sweep.SweepAborted("hydra/launcher", f"{e.filename or 'sbatch'} was not found: this machine is "
                                     "no SLURM login node. Launch from one, or use hydra/launcher=joblib or "
                                     "submitit_local here", 2) from None
        submitted = [(idx, overrides, job) for (idx, overrides), job in zip(todo, jobs)]
        for idx, overrides, job in submitted:
            mark_pending(self._job_dir(sweep_dir, self._job_config(idx, overrides)), str(job.job_id), overrides)
        return submitted

    def _wait(self, sweep_dir: Path, submitted: list[tuple[int, list[str], Any]]) -> dict[int, JobReturn]:
        jobs = [job for _, _, job in submitted]
        array_id = str(jobs[0].job_id).split("_")[0]
        say(f"SLURM array job {array_id}: {len(jobs)} task{'s' if len(jobs) > 1 else ''} submitted (`squeue -j {array_id}`); waiting for them. "
            "Ctrl-C stops the waiting, not the jobs")
        watcher = PendingWatcher(array_id, interval=self.pending_check_s)
        watcher.start()
        started = last = time.monotonic()
        waiting, limit = list(jobs), self.unreachable_s()
        try:
            while waiting:
                now = time.monotonic()
                if limit and watcher.silent_for() >= limit:
                    raise self._unreachable(array_id, watcher, len(waiting), len(jobs), sweep_dir)
                if now - last >= min(self.poll_s, max(2.0, (now - started) / 10)):
                    jobs[0].watcher.update()  # one sacct call for every task of the array
                    last = now
                waiting = [job for job in waiting if not job.done()]
                if waiting:
                    time.sleep(1.0)
        except KeyboardInterrupt:  # no SLURM call from here on: sacct may be slow, and the user wants out
            raise self._detached(array_id, len(waiting), len(jobs), sweep_dir) from None
        finally:
            watcher.stop()
        return {idx: self._outcome(sweep_dir, idx, overrides, job) for idx, overrides, job in submitted}

    @staticmethod
    def _detached(array_id: str, left: int, total: int, sweep_dir: Path) -> sweep.SweepAborted:
        """The paragraph for Ctrl-C while waiting; `left`: the tasks not finished at the last check."""
        return sweep.SweepAborted(
            "interrupted", f"stopped waiting for SLURM array job {array_id}, but its jobs go on in SLURM "
            f"({left} of {total} not finished at the last check; `squeue -j {array_id}` shows them). Cancel them with "
            f"`scancel {array_id}`; or, once they have ended, rerun the same command with resume=true to "
            f"collect them into {sweep_dir}/summary.md (completed jobs are not run again; the others are)", 130)

    @staticmethod
    def _unreachable(array_id: str, watcher: PendingWatcher, left: int, total: int,
                     sweep_dir: Path) -> sweep.SweepAborted:
        """The paragraph for a SLURM that stopped answering while the sweep waited."""
        silent = watcher.silent_for()
        said = f"{silent:.0f} s" if silent < 120 else f"{silent / 60:.0f} min"
        return sweep.SweepAborted(
            "slurm", f"SLURM has not answered for {said} (squeue: {watcher.last_error}), so this sweep "
            f"stopped waiting for array job {array_id} ({left} of {total} tasks not finished at its last answer). "
            "Its controller is down or unreachable from here; the jobs may run on, or have been lost with it. Once "
            f"SLURM answers again, `squeue -j {array_id}` shows them; rerun the same command with resume=true to "
            f"collect them into {sweep_dir}/summary.md (completed jobs are not run again; the others are). "
            "SAMPLER_SLURM_UNREACHABLE_S sets how long to wait (seconds; 0: for ever)", 1)

    def _outcome(self, sweep_dir: Path, idx: int, overrides: list[str], job: Any) -> JobReturn:
        """The job's own JobReturn when it produced one; otherwise its SLURM end, recorded."""
        state = str(job.state)
        if state.startswith("COMPLETED"):  # a shared file system may show its result a little later
            deadline = time.monotonic() + job._results_timeout_s
            while not job.paths.result_pickle.exists() and time.monotonic() < deadline:
                time.sleep(1.0)
        if job.paths.result_pickle.exists():
            try:
                return job.results()[0]
            except Exception as e:  # an exception escaped the job: its metrics.json says why, or says running
                log.debug("job %s: %s", job.job_id, e)
        cfg = self._job_config(idx, overrides)
        job_dir = self._job_dir(sweep_dir, cfg)
        state = job.get_info(mode="force").get("State") or job.state or "UNKNOWN"
        config = None
        try:
            with self._as_job(cfg, job_dir) as task_cfg:
                config = OmegaConf.to_container(task_cfg, resolve=True)
            for key in sweep.LAUNCH_KEYS:
                config.pop(key, None)  # type: ignore[union-attr]
        except Exception:  # a config that resolves only inside the job: the summary names the job anyway
            config = None
        task_overrides = [o for o in cfg.hydra.overrides.task if o.split("=", 1)[0] not in sweep.LAUNCH_KEYS]
        record_slurm_end(job_dir, state, str(job.job_id), job.paths.stderr, config, task_overrides)
        return JobReturn(overrides=overrides, working_dir=str(job_dir), task_name=str(cfg.hydra.job.name),
                         status=JobStatus.COMPLETED, _return_value=None)
