"""The Hydra task function, at module level so launchers can pickle it (DESIGN §2)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sampler.experiments.errors import ConfigError, Stopped
from sampler.experiments.runs import sweep
from sampler.experiments.train import runner
from sampler.experiments.train.env import available_cpus
from sampler.experiments.tools.config import is_multirun
from sampler.experiments.train.tasks import objective

from .errors import USER_ERROR, report

log = logging.getLogger("sampler")
LAUNCH_KEYS = sweep.LAUNCH_KEYS  # not part of what a job ran: how the sweep was launched, what a sweeper optimises


def _sweep_dir(root: str, resume: Any, overrides: Any) -> str:
    try:
        return str(sweep.resolve_sweep_dir(root, resume, [str(o) for o in overrides]))
    except ConfigError as e:  # OmegaConf would wrap it into a traceback; say it plainly
        report(e)
        raise SystemExit(USER_ERROR) from None


sweep.register_resolvers(_sweep_dir)  # before Hydra composes train.yaml, and in every launcher's job process

# sampler's launcher and sweeper, by the names their configs give (configs/hydra/launcher/slurm.yaml,
# configs/hydra/sweeper/optuna_study.yaml): Hydra instantiates only plugins named hydra_plugins.*
# (hydra.core.plugins), and these live in sampler.experiments.runs. Skipped without the plugin they extend.
HYDRA_PLUGINS = {"hydra_plugins.sampler.SlurmLauncher": ("launchers", "SlurmLauncher"),
                 "hydra_plugins.sampler.OptunaSweeper": ("study", "OptunaSweeper")}


def register_hydra_plugins() -> None:
    import importlib

    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    for name, (module, cls) in HYDRA_PLUGINS.items():
        try:
            plugin = getattr(importlib.import_module(f"sampler.experiments.runs.{module}"), cls)
        except ImportError:
            continue
        plugins.register(plugin)
        plugins.class_name_to_class[name] = plugin


register_hydra_plugins()


# The GPUs the launching process sees, for the jobs of a local parallel sweep: submitit's local
# executor sets every job's CUDA_VISIBLE_DEVICES to 0..gpus_per_node-1, so a job cannot see them itself.
GPUS_ENV = "SAMPLER_LAUNCHER_GPUS"


def visible_gpus() -> list[str]:
    """CUDA_VISIBLE_DEVICES as a list, or every GPU of the machine (NVML: no CUDA context is made)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


if GPUS_ENV not in os.environ:  # in the launching process; its jobs inherit it
    os.environ[GPUS_ENV] = ",".join(visible_gpus())


def gpu_for_job(job_num: int, gpus: list[str]) -> str | None:
    """The GPU a job of a local parallel sweep takes: its number modulo the GPUs; None with fewer than two."""
    return gpus[job_num % len(gpus)] if len(gpus) > 1 else None


def _local_parallel(hc: DictConfig) -> bool:
    target = str(OmegaConf.select(hc, "launcher._target_", default="") or "")
    return target.endswith("submitit_launcher.LocalLauncher") or ("JoblibLauncher" in target and _parallel_jobs(hc) > 1)


def _pin_gpu(hc: DictConfig) -> None:
    """Jobs running side by side on one machine, each on its own GPU (CUDA_VISIBLE_DEVICES), not
    all on the first. A reused joblib worker whose first job started CUDA keeps that GPU."""
    import torch

    if not _local_parallel(hc) or torch.cuda.is_initialized():
        return
    gpu = gpu_for_job(int(hc.job.num), [g for g in os.environ.get(GPUS_ENV, "").split(",") if g])
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info("job %s: GPU %s (CUDA_VISIBLE_DEVICES)", hc.job.num, gpu)


def _parallel_jobs(hc: DictConfig) -> int:
    """How many jobs of this sweep share the machine: joblib's n_jobs; for submitit,
    whose local executor starts every job at once, the cores over cpus_per_task (on
    SLURM the job only sees its own cores, so that comes out as 1); for Ray, which runs as
    many jobs at once as the cores hold `ray.remote.num_cpus` (1 unless set), the same."""
    if str(OmegaConf.select(hc, "launcher._target_", default="")).endswith("ray_launcher.RayLauncher"):
        return max(1, available_cpus() // int(OmegaConf.select(hc, "launcher.ray.remote.num_cpus", default=None) or 1))
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None)
    if n_jobs is not None:
        return available_cpus() if n_jobs < 1 else int(n_jobs)  # joblib: -1 means one per core
    cpus_per_task = OmegaConf.select(hc, "launcher.cpus_per_task", default=None)
    if cpus_per_task:
        return max(1, available_cpus() // int(cpus_per_task))
    return 1


# Hydra's commands, of which it runs one per command line (hydra/_internal/utils.py).
HYDRA_MODES = {"--run": ("-r",), "--multirun": ("-m",), "--cfg": ("-c",), "--info": ("-i",),
               "--shell-completion": ("-sc",)}


def hydra_modes(args: list[str]) -> list[str]:
    """The Hydra commands a command line gives, by their long names."""
    return [name for name, short in HYDRA_MODES.items()
            if any(a in (name, *short) or a.startswith(name + "=") for a in args)]


def check_hydra_modes(args: list[str]) -> None:
    """Two of Hydra's commands at once, said as what to do instead of Hydra's ValueError traceback."""
    modes = hydra_modes(args)
    if set(modes) == {"--multirun", "--cfg"}:
        raise ConfigError("--cfg", "--cfg prints the config of one run, not a sweep's, so it cannot go with -m: drop "
                          "-m and give one value per key to see what one job of the sweep runs (for example "
                          "`sampler train --cfg job model.pool=avg`)")
    if len(modes) > 1:
        raise ConfigError(modes[1], f"{' and '.join(modes)} cannot go together: Hydra runs one of --run, --multirun, "
                          "--cfg, --info and --shell-completion per command; give one")


def check_output_dirs(args: list[str]) -> None:
    """The folder runs are written to must be one: a file in the way or no permission is
    the user's to fix (exit 2), said before Hydra tries and fails with a traceback."""
    multirun = is_multirun(args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in args if a.startswith(key + "=")]
    target = Path(given[-1] if given else ("outputs/multirun" if multirun else "outputs/runs"))
    for folder in (target, *target.parents):
        if folder.exists() or folder == Path("."):
            break
    else:
        folder = Path(".")
    if not folder.is_dir():
        raise ConfigError(key, f"{folder} is a file, not a folder, so runs cannot be written under {target}. "
                          f"Move it away, or write elsewhere with {key}=<folder>")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(key, f"{folder} is not writable by this user, so runs cannot be written under "
                          f"{target}. Fix its permissions, or write elsewhere with {key}=<folder>")


def _resume_arg(args: list[str]) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    return found[-1] if found and found[-1].lower() not in ("false", "null", "") else None


def resumed_args(args: list[str]) -> list[str]:
    """`resume=<dir>` continues what that run or sweep ran: the overrides it was started
    with (read from the dir) apply again, after the command line's, which replace those
    of the same key. So the `sampler train resume=<dir>` that a stopped run prints works
    as it stands, and a changed key is refused by name (`check_resume_args`) instead of
    composing a config from train.yaml's defaults."""
    value = _resume_arg(args)
    if value is None or value.lower() == "true":
        return args
    saved = sweep.saved_overrides(Path(value))
    if saved is None:
        return args  # not a run or sweep dir: check_resume_args / resolve_sweep_dir say so
    given = {sweep.override_key(a) for a in args if "=" in a and not a.startswith("-")}
    inherited = [o for o in saved if sweep.override_key(o) not in given]
    if inherited:
        _console(f"resume: {value} was started with {' '.join(inherited)}")
    return [*args, *inherited]


def check_resume_args(args: list[str]) -> None:
    """A single run's `resume=`, checked before Hydra writes into any directory: the run
    must exist and its checkpoint must hold the same config."""
    multirun = is_multirun(args)
    value = _resume_arg(args)
    if value is None:
        return
    if multirun:
        _check_resumed_sweep(args, value)
        return
    from sampler.experiments.tools.config import compose

    overrides = [a for a in args if "=" in a and not a.startswith("-") and not a.startswith("resume=")]
    resume: Any = True if value.lower() == "true" else value
    found = sweep.resume_run_dir("outputs/runs", resume, [*overrides, f"resume={value}"])
    cfg = compose(overrides)
    for key in LAUNCH_KEYS:
        cfg.pop(key, None)
    runner.load_checkpoint(found, cfg)


def _check_resumed_sweep(args: list[str], value: str) -> None:
    """`resume=<sweep dir>` must run that sweep's jobs: a command line that changes what
    runs (another value, a key added) would add other jobs to its directory and overwrite
    its multirun.yaml."""
    saved = sweep.saved_overrides(Path(value)) if value.lower() != "true" else None
    if saved is None:
        return
    given = [a for a in args if "=" in a and not a.startswith("-")
             and sweep.changes_what_runs(sweep.override_key(a), in_sweep=True)]
    before = {sweep.override_key(o): o for o in saved}
    changed = [(before.get(sweep.override_key(a)), a) for a in given if a not in saved]
    if changed:
        shown = "; ".join(f"{old} then, {new} now" if old else f"{new} added" for old, new in changed)
        raise ConfigError("resume", f"{value} was launched with {' '.join(saved) or 'no overrides'}, and this "
                          f"command changes what its jobs run: {shown}. A resumed sweep runs the same jobs: drop "
                          "those overrides (`sampler train -m resume=<sweep dir>` alone continues it), or start a "
                          "new sweep without resume")


# The single run this process trains, once Hydra has made its dir: what Ctrl-C names (cli/app.py).
last_run: dict[str, Any] = {}


@hydra.main(version_base="1.3", config_path="pkg://sampler.configs", config_name="train")
def train(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode != RunMode.MULTIRUN:
        last_run.update(dir=run_dir, checkpoint=bool(cfg.trainer.checkpoint))
        resume = bool(cfg.get("resume"))
        done = sweep.completed_metrics(run_dir) if resume else None
        if done is not None:
            log.info("%s completed earlier; nothing to resume", run_dir)
            return objective(done, cfg.get("optimized_metric"))
        with sweep.claim(run_dir) as ours:  # two processes training into one dir would overwrite each other
            if not ours:
                report(ConfigError("resume", f"{run_dir} is being trained by another process right now; let it "
                                   "finish, or stop it (Ctrl-C, or SIGTERM, which saves a checkpoint) and resume "
                                   "then"))
                raise SystemExit(USER_ERROR)
            return _train(cfg, hc, multirun=False, resume=resume)
    with sweep.claim(run_dir) as ours:
        if not ours:  # said on the console only: the job's train.log belongs to the process running it
            _console(f"job {hc.job.num}: {run_dir} is being run by another process (running elsewhere); skipped")
            return None
        # A job submitit requeued (pre-emption, time-out) runs again in its own directory:
        # its checkpoint says where to go on from, whether or not the sweep said resume.
        resume = bool(cfg.get("resume")) or (run_dir / runner.CHECKPOINT).is_file()
        if resume:
            done = sweep.completed_metrics(run_dir)
            if done is not None:
                log.info("job %s: completed earlier in %s; skipped (resume)", hc.job.num, run_dir)
                return objective(done, cfg.get("optimized_metric"))
            if not (run_dir / runner.CHECKPOINT).is_file():
                sweep.clear_attempt(run_dir)  # nothing to continue from: start over, without old curves
        _pin_gpu(hc)
        return _train(cfg, hc, multirun=True, resume=resume)


def _refused_before_training(run_dir: Path) -> bool:
    """A new run that recorded `failed` before its first epoch and has no checkpoint: its
    data was missing or damaged, or a value was refused once the data was read. A
    diverged run keeps its record (`diverged` is a result)."""
    from sampler.experiments.runs.read import read_run

    run = read_run(run_dir)
    return run.status == "failed" and not run.metrics.get("history") and not (run_dir / runner.CHECKPOINT).exists()


def _remove_refused(run_dir: Path) -> None:
    """The run dir, and the default `outputs/runs` and `outputs` above it when that left
    them empty: a refused command leaves nothing behind."""
    shutil.rmtree(run_dir, ignore_errors=True)
    default = Path.cwd() / "outputs" / "runs"
    if run_dir.resolve().parent == default:
        for folder in (default, default.parent):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


def _console(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _train(cfg: DictConfig, hc: DictConfig, multirun: bool, resume: bool) -> float | None:
    run_dir = Path(hc.runtime.output_dir)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        for key in LAUNCH_KEYS:
            plain.pop(key, None)
        overrides = [o for o in hc.overrides.task if o.split("=", 1)[0] not in LAUNCH_KEYS]
        metrics = runner.train(plain, run_dir, overrides, _parallel_jobs(hc) if multirun else 1,
                               resume=resume, record_refusal=multirun)
        return objective(metrics, cfg.get("optimized_metric"))
    except ConfigError as e:
        report(e)
        if isinstance(e, Stopped):  # a signal stops the whole sweep, not just this job
            raise SystemExit(e.exit_code) from None
        if not multirun:
            if not sweep.is_run_dir(run_dir) or (not resume and _refused_before_training(run_dir)):
                _remove_refused(run_dir)  # exit 2 before the first step: leave nothing behind
            raise SystemExit(e.exit_code) from None
    except Exception:
        if not multirun:
            raise
        # The job's metrics.json already says `failed` with the error; the
        # other jobs of the sweep go on and the sweep summary lists this one.
        log.exception("job %s failed", hc.job.num)
    return None
