"""Sweeps: where they write, how they resume, and what they leave at the end.

- A fresh sweep gets a directory of its own, made with an exclusive mkdir, so two
  sweeps launched at once never share one. A job's directory is named from its
  overrides alone (no job number), so the same job lands in the same place when
  the sweep is run again.
- `resume=true` reruns the newest sweep launched with the same overrides
  (`resume=<sweep dir>` names one): jobs already `completed` are skipped, the
  rest continue from their checkpoint (or start over when they have none). A job
  holds a lock on its directory while it runs, so two resumes of one sweep never
  write into the same job.
- Jobs record their own failures (status `failed` in `metrics.json`) and return,
  so one bad job never stops the others; the end-of-sweep summary
  (experiments/analysis/summary.py) lists them and the CLI exits non-zero.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import OmegaConf

from ..errors import ConfigError
from .hparams import LAUNCH_KEYS, RESUMABLE_CHANGES

log = logging.getLogger("sampler")

TIME_FORMAT = "%Y-%m-%d_%H-%M-%S.%f"
MAX_NAME = 200  # bytes; file systems stop at 255
LOCK = ".lock"


class SweepAborted(BaseException):
    """A sweep that cannot go on, said in one paragraph (`key`: `message`) with an exit
    code, by a launcher or a sweeper. A BaseException, like KeyboardInterrupt, because
    Hydra prints a traceback for every Exception raised inside a multirun
    (hydra._internal.utils.run_and_report); the CLI catches it, writes the summary of
    `sweep_dir` when there is one, and prints the paragraph."""

    def __init__(self, key: str, message: str, exit_code: int = 1, sweep_dir: Path | None = None):
        super().__init__(f"{key}: {message}")
        self.key, self.message, self.exit_code, self.sweep_dir = key, message, exit_code, sweep_dir


# ---------------------------------------------------------------- where a sweep writes

def new_sweep_dir(root: Path, now: Any = datetime.now) -> Path:
    """A directory nobody else has: the launch time, made with an exclusive mkdir."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        path = root / (now().strftime(TIME_FORMAT) + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not make a new sweep directory under {root}")


def override_key(override: str) -> str:
    """`key` of a `key=value`, `+key=value` or `~key` override."""
    return override.split("=", 1)[0].lstrip("+~")


def changes_what_runs(key: str, in_sweep: bool = False) -> bool:
    """Whether an override of `key` changes what a run computes: not `resume` or a
    sweeper's metric, not the keys a resumed run may change (threads, progress, paths),
    not Hydra's own (the launcher, its partition, where a sweep writes). In a sweep
    `trainer.threads` counts: it names the jobs' directories (a sweep over threads
    measures speed), so another value would run other jobs."""
    if in_sweep and key == "trainer.threads":
        return True
    return key not in LAUNCH_KEYS and key not in RESUMABLE_CHANGES and not key.startswith("hydra")


def what_runs(overrides: list[str], in_sweep: bool = False) -> list[str]:
    """The overrides that decide what was run, in a comparable order."""
    return sorted(o for o in overrides if changes_what_runs(override_key(o), in_sweep))


def saved_overrides(path: Path) -> list[str] | None:
    """The task overrides a run dir (`.hydra/overrides.yaml`) or a sweep dir
    (`multirun.yaml`) was started with, `resume` aside; None where neither is readable."""
    try:
        if (Path(path) / "multirun.yaml").is_file():
            found = OmegaConf.load(Path(path) / "multirun.yaml").hydra.overrides.task
        else:
            found = OmegaConf.load(Path(path) / ".hydra" / "overrides.yaml")
        return [str(o) for o in found if override_key(str(o)) not in LAUNCH_KEYS]
    except Exception:  # absent, being written, or not Hydra's
        return None


def find_sweep(root: Path, overrides: list[str]) -> Path | None:
    """The newest sweep under `root` launched with the same overrides, apart from those
    that do not change what runs (`changes_what_runs`)."""
    wanted = what_runs(overrides, in_sweep=True)
    for path in sorted(root.glob("*/multirun.yaml"), reverse=True):
        earlier = saved_overrides(path.parent)
        if earlier is not None and what_runs(earlier, in_sweep=True) == wanted:
            return path.parent
    return None


def resolve_sweep_dir(root: str, resume: Any, overrides: list[str]) -> Path:
    """`hydra.sweep.dir`: a new directory, or the sweep that `resume` points at."""
    if resume is None or resume is False:
        return new_sweep_dir(Path(root))
    if resume is True:
        found = find_sweep(Path(root), overrides)
        if found is None:
            log.warning("resume: no earlier sweep under %s was launched with these overrides; "
                        "starting a new one", root)
            return new_sweep_dir(Path(root))
        log.info("resume: continuing %s (completed jobs are skipped)", found)
        return found
    path = Path(str(resume))
    if not (path / "multirun.yaml").is_file():
        raise ConfigError("resume", f"{path} is not a sweep directory (it has no multirun.yaml); "
                          f"pass one such as {root}/<time>, or resume=true for the newest sweep "
                          "launched with the same overrides")
    return path


# ---------------------------------------------------------------- where a single run writes

def is_run_dir(path: Path) -> bool:
    return (Path(path) / "metrics.json").is_file() or (Path(path) / "checkpoint.pt").is_file()


def find_run(root: Path, overrides: list[str]) -> Path | None:
    """The newest run under `root` started with the same overrides, apart from those that
    do not change what runs (`changes_what_runs`)."""
    wanted = what_runs(overrides)
    for path in sorted(Path(root).glob("*/.hydra/overrides.yaml"), reverse=True):
        run_dir = path.parent.parent
        earlier = saved_overrides(run_dir)
        if earlier is not None and what_runs(earlier) == wanted and is_run_dir(run_dir):
            return run_dir
    return None


def resume_run_dir(root: str, resume: Any, overrides: list[str]) -> Path | None:
    """The run a single `sampler train resume=...` continues: `resume=<run dir>`, or with
    `resume=true` the newest run under `root` with the same overrides. None: no resume."""
    if resume is None or resume is False:
        return None
    if resume is True:
        found = find_run(Path(root), overrides)
        if found is None:
            raise ConfigError("resume", f"no earlier run under {root} was started with these overrides; "
                              f"name one with resume={root}/<time>, or drop resume to start a new run")
        return found
    path = Path(str(resume))
    if not is_run_dir(path):
        hint = " (that is a sweep: add -m to resume it)" if (path / "multirun.yaml").is_file() else ""
        raise ConfigError("resume", f"{path} is not a run directory: it has no metrics.json or "
                          f"checkpoint.pt{hint}. Pass a run's directory, such as {root}/<time>")
    return path


def run_dir(root: str, resume: Any, overrides: list[str], now: Any = datetime.now) -> str:
    """`hydra.run.dir`: the run being resumed, or a new directory named by the time."""
    try:
        found = resume_run_dir(root, resume, overrides)
    except ConfigError:
        found = None  # the CLI checks `resume` before Hydra runs and reports it there
    return str(found) if found is not None else str(Path(root) / now().strftime(TIME_FORMAT))


def job_dir_name(override_dirname: str) -> str:
    """A job's directory: its overrides, so a rerun finds it; hashed when too long."""
    if not override_dirname:
        return "default"
    if len(override_dirname.encode()) <= MAX_NAME:
        return override_dirname
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    return override_dirname.encode()[:MAX_NAME - 11].decode(errors="ignore") + "~" + digest


def trial_dir_name(number: int, override_dirname: str) -> str:
    """An optimizing sweeper's trial: its number first, since two trials may draw the same values."""
    return f"trial={number}," + job_dir_name(override_dirname) if override_dirname else f"trial={number}"


def register_resolvers(sweep_dir: Callable[[str, Any, Any], str]) -> None:
    """`${sampler.sweep_dir:...}` and `${sampler.job_dir:...}`, used in configs/train.yaml.
    `${sampler.run_dir:...}` is the single run's directory (`run_dir`);
    `${sampler.trial_dir:N,...}` an Optuna trial's (set by runs/study.py).
    `sweep_dir(root, resume, overrides)` wraps `resolve_sweep_dir` with the caller's way
    of reporting a wrong `resume` (OmegaConf would turn a raise into a traceback)."""
    # Cached, so the launcher, the jobs and the end-of-sweep callback agree on one dir.
    OmegaConf.register_new_resolver("sampler.sweep_dir", sweep_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("sampler.run_dir", lambda root, resume, overrides: run_dir(
        root, resume, [str(o) for o in overrides]), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("sampler.job_dir", job_dir_name, replace=True)
    OmegaConf.register_new_resolver("sampler.trial_dir", lambda number, name: trial_dir_name(int(number), name),
                                    replace=True)


# ---------------------------------------------------------------- jobs a sweep never started

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
JOB_SUBDIR = "${sampler.job_dir:${hydra.job.override_dirname}}"  # configs/train.yaml's hydra.sweep.subdir


@dataclass
class Unstarted:
    """The jobs a sweep planned that have no directory: it stopped before launching them."""
    sweep_dir: Path
    planned: int  # jobs in the whole sweep
    jobs: list[list[str]]  # each missing job's overrides, in the sweep's order
    swept: list[str]  # the keys the sweep varies
    resume: str  # the command that runs them (and reruns the unfinished ones)

    def describe(self, most: int = 3) -> str:
        """`model.pool=avg seed=0,1` when the missing jobs are such a grid, else each job."""
        values = {k: list(dict.fromkeys(dict(o.split("=", 1) for o in job).get(k, "") for job in self.jobs))
                  for k in self.swept}
        grid = 1
        for v in values.values():
            grid *= len(v)
        if grid == len(self.jobs):
            return " ".join(f"{k}={','.join(v)}" for k, v in values.items())
        each = [" ".join(o for o in job if o.split("=", 1)[0] in self.swept) for job in self.jobs]
        return "; ".join(each[:most]) + (f"; and {len(each) - most} more" if len(each) > most else "")


def unstarted_jobs(sweep_dir: Path) -> Unstarted | None:
    """The jobs `sweep_dir/multirun.yaml` plans that have no directory there, expanded as
    Hydra's basic sweeper expands them (`hydra.sweeper.params`, then the command line's
    task overrides) and named as Hydra names their directories (job_dir_name). None when
    every job has one, or when that cannot be told: no readable multirun.yaml, another
    sweeper (Optuna's trials are not a grid), or job directories named otherwise."""
    # Hydra's own expansion and naming (private modules): any change there says nothing here.
    try:
        from hydra._internal.config_loader_impl import get_overrides_dirname
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra = OmegaConf.to_container(OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra)
        if hydra["sweeper"]["_target_"] != BASIC_SWEEPER or hydra["sweep"]["subdir"] != JOB_SUBDIR:
            return None
        task = [str(o) for o in hydra["overrides"]["task"]]
        params = [f"{k}={v}" for k, v in (hydra["sweeper"].get("params") or {}).items()]
        parser = OverridesParser.create()
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params + task), None)
        naming = hydra["job"]["config"]["override_dirname"]
        missing = [job for job in jobs if not (Path(sweep_dir) / job_dir_name(get_overrides_dirname(
            parser.parse_overrides(job), naming["exclude_keys"], naming["item_sep"], naming["kv_sep"]))).exists()]
    except Exception:
        return None
    if not missing:
        return None
    keys = list(dict.fromkeys(o.split("=", 1)[0] for job in jobs for o in job))
    swept = [k for k in keys if len({o for job in jobs for o in job if o.split("=", 1)[0] == k}) > 1]
    launch = [o for o in hydra["overrides"]["hydra"] if o != "hydra.mode=MULTIRUN"]
    command = shlex.join(["sampler", "train", "-m", *launch, *(o for o in task if not o.startswith("resume="))])
    return Unstarted(Path(sweep_dir), len(jobs), missing, swept, f"{command} resume={shlex.quote(str(sweep_dir))}")


# ---------------------------------------------------------------- jobs of a resumed sweep

def completed_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The job's metrics if an earlier attempt completed it; a metrics.json that is not a JSON
    object is no record (as in runs/read.py)."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("status") == "completed" else None


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Hold the job's directory while it runs; False when another process holds it."""
    import fcntl

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir) / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:  # a cluster file system mounted without locks: run unguarded
            yield True
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clear_attempt(run_dir: Path) -> None:
    """Drop an unfinished attempt's TensorBoard events, so its curves don't mix with the rerun's."""
    for path in Path(run_dir).glob("events.out.tfevents.*"):
        path.unlink()
