"""Hydra's own files in a run dir (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`),
written as sampler writes its own: atomically (DESIGN §4), and a disk that refuses them
is one paragraph instead of Hydra's traceback.

Hydra writes them in `run_job` before the task function runs, and `run_and_report`
prints any Exception from there as a traceback and exits 1, so the CLI never sees their
OSError. Hydra's writer, `hydra.core.utils._save_config` (hydra-core 1.3), is replaced
by `save_config`, whose SystemExit passes through `run_and_report` as the task
function's own do (cli/task.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import USER_ERROR, report


def install() -> None:
    """In this process: single runs and the basic launcher's sweeps."""
    import hydra.core.utils

    hydra.core.utils._save_config = save_config


def save_config(cfg: Any, filename: str, output_dir: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from sampler.experiments.errors import WriteError
    from sampler.experiments.runs.atomic import UNWRITABLE, write_text
    from sampler.experiments.runs.sweep import is_run_dir

    from .task import _remove_refused

    try:
        write_text(Path(output_dir) / filename, OmegaConf.to_yaml(cfg))
    except WriteError as e:
        report(e)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if not is_run_dir(run_dir):  # nothing recorded in it yet (a resumed run keeps its dir)
            _remove_refused(run_dir)
        unwritable = getattr(e.__cause__, "errno", None) in UNWRITABLE
        raise SystemExit(USER_ERROR if unwritable else e.exit_code) from None
