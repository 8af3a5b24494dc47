"""Finding run directories and reading them as they stand: never re-running anything,
never stopping at a half-written, failed or still-running run (DESIGN §4)."""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .hparams import flatten

# Recorded by the run, not configured; a comparison must not mix them silently (a
# different test set size, say, makes a different variant, and a shared one is shown).
RECORDED = ("precision", "device", "data/test_images")


@dataclass
class Run:
    dir: Path
    status: str
    metrics: dict[str, Any]
    config: dict[str, Any]  # flat dotted keys
    error: str | None = None

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.metrics.get("seed"))


def find_runs(paths: Sequence[Path | str], strict: bool = True) -> list[Run]:
    """Every run directory under `paths` (one holding metrics.json or a Hydra snapshot).

    strict: a missing path or finding nothing is the user's mistake (ConfigError).
    """
    dirs: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            if strict:
                raise ConfigError(str(path), "does not exist; pass a sweep directory "
                                  "(outputs/multirun/<time>), a run directory, or outputs/")
            continue
        dirs.update(p.parent for p in path.rglob("metrics.json"))
        dirs.update(p.parent.parent for p in path.rglob(".hydra/config.yaml"))
    if strict and not dirs:
        raise ConfigError(" ".join(map(str, paths)), "holds no run directories (none has a metrics.json "
                          "or a .hydra/ snapshot); train some first (sampler train -m ...) or point at "
                          "the outputs/ folder they were written to")
    return [read_run(d) for d in sorted(dirs)]


def _process_gone(process: Any) -> bool:
    """Whether a `running` run's process is known to be dead: only decidable on its own host."""
    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(process["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return False


def read_run(run_dir: Path) -> Run:
    """One run as it stands; a run without readable metrics keeps its Hydra config."""
    metrics: dict[str, Any] = {}
    status, error = "no metrics", "metrics.json was never written (the job stopped before training)"
    path = run_dir / "metrics.json"
    if path.exists():
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError(f"a JSON {type(metrics).__name__}, not an object")
            status, error = metrics.get("status"), metrics.get("error")
            status = status if isinstance(status, str) and status else "unknown"  # null too, not "None"
            if status == "running" and _process_gone(metrics.get("process")):
                status, error = "killed", (f"its process (pid {metrics['process']['pid']}) ended without "
                                           "recording an end status: killed (SIGKILL, out of memory) or the "
                                           "machine restarted; `resume=true` reruns it")
        except (OSError, ValueError) as e:
            metrics, status, error = {}, "unreadable", f"metrics.json: {e}"
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else _hydra_config(run_dir)
    flat = flatten(config or {})
    for key in RECORDED:
        if key in metrics:
            flat[key] = metrics[key]
    return Run(run_dir, status, metrics, flat, error)


def _hydra_config(run_dir: Path) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))  # type: ignore
    except Exception:
        return None
