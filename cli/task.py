"""The Hydra task function, at module level so launchers can pickle it (DESIGN §2)."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sampler.experiments import runner
from sampler.experiments.env import available_cpus
from sampler.experiments.errors import ConfigError

from .errors import USER_ERROR, report

log = logging.getLogger("sampler")


def _parallel_jobs(hc: DictConfig) -> int:
    """How many jobs of this sweep share the machine (joblib's n_jobs)."""
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=1)
    if n_jobs is None or n_jobs < 1:  # joblib: -1 means one per core
        return available_cpus()
    return int(n_jobs)


@hydra.main(version_base="1.3", config_path="pkg://sampler.configs", config_name="train")
def train(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        metrics = runner.train(plain, Path(hc.runtime.output_dir), list(hc.overrides.task),
                               _parallel_jobs(hc) if multirun else 1)
        return metrics.get("val/acc_best", metrics.get("test/acc"))  # for optimizing sweepers
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
