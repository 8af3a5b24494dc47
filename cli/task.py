"""The Hydra task function, at module level so launchers can pickle it (DESIGN §2)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sampler.experiments.errors import ConfigError
from sampler.experiments.runs import sweep
from sampler.experiments.train import runner
from sampler.experiments.train.env import available_cpus
from sampler.experiments.train.tasks import objective

from .errors import USER_ERROR, report

log = logging.getLogger("sampler")
# Not part of what a job ran: how the sweep was launched and what a sweeper optimises.
LAUNCH_KEYS = ("resume", "optimized_metric")


def _sweep_dir(root: str, resume: Any, overrides: Any) -> str:
    try:
        return str(sweep.resolve_sweep_dir(root, resume, [str(o) for o in overrides]))
    except ConfigError as e:  # OmegaConf would wrap it into a traceback; say it plainly
        report(e)
        raise SystemExit(USER_ERROR) from None


sweep.register_resolvers(_sweep_dir)  # before Hydra composes train.yaml, and in every launcher's job process


def _parallel_jobs(hc: DictConfig) -> int:
    """How many jobs of this sweep share the machine: joblib's n_jobs; for submitit,
    whose local executor starts every job at once, the cores over cpus_per_task (on
    SLURM the job only sees its own cores, so that comes out as 1)."""
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None)
    if n_jobs is not None:
        return available_cpus() if n_jobs < 1 else int(n_jobs)  # joblib: -1 means one per core
    cpus_per_task = OmegaConf.select(hc, "launcher.cpus_per_task", default=None)
    if cpus_per_task:
        return max(1, available_cpus() // int(cpus_per_task))
    return 1


RESUME_NEEDS_MULTIRUN = "reruns the unfinished jobs of a sweep; add -m (a single run has no finished jobs to skip)"


def check_resume_args(args: list[str]) -> None:
    """`resume=` on the command line without -m, refused before Hydra makes a run dir."""
    multirun = any(a in ("-m", "--multirun") or a.lower() == "hydra.mode=multirun" for a in args)
    resumed = any(a.startswith("resume=") and a.split("=", 1)[1].lower() not in ("false", "null", "")
                  for a in args)
    if resumed and not multirun:
        raise ConfigError("resume", RESUME_NEEDS_MULTIRUN)


@hydra.main(version_base="1.3", config_path="pkg://sampler.configs", config_name="train")
def train(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        if cfg.get("resume"):  # set in a preset: the command line is checked before Hydra
            report(ConfigError("resume", RESUME_NEEDS_MULTIRUN))
            raise SystemExit(USER_ERROR)
        return _train(cfg, hc, multirun=False)
    run_dir = Path(hc.runtime.output_dir)
    with sweep.claim(run_dir) as ours:
        if not ours:
            log.warning("job %s: %s is being run by another process; skipped", hc.job.num, run_dir)
            return None
        if cfg.get("resume"):
            done = sweep.completed_metrics(run_dir)
            if done is not None:
                log.info("job %s: completed earlier in %s; skipped (resume)", hc.job.num, run_dir)
                return objective(done, cfg.get("optimized_metric"))
            sweep.clear_attempt(run_dir)
        return _train(cfg, hc, multirun=True)


def _train(cfg: DictConfig, hc: DictConfig, multirun: bool) -> float | None:
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        for key in LAUNCH_KEYS:
            plain.pop(key, None)
        overrides = [o for o in hc.overrides.task if o.split("=", 1)[0] not in LAUNCH_KEYS]
        metrics = runner.train(plain, Path(hc.runtime.output_dir), overrides,
                               _parallel_jobs(hc) if multirun else 1)
        return objective(metrics, cfg.get("optimized_metric"))
    except ConfigError as e:
        report(e)
        if not multirun:
            raise SystemExit(USER_ERROR) from None
    except Exception:
        if not multirun:
            raise
        # The job's metrics.json already says `failed` with the error; the
        # other jobs of the sweep go on and the sweep summary lists this one.
        log.exception("job %s failed", hc.job.num)
    return None
