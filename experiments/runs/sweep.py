"""Sweeps: where they write, how they resume, and what they leave at the end.

- A fresh sweep gets a directory of its own, made with an exclusive mkdir, so two
  sweeps launched at once never share one. A job's directory is named from its
  overrides alone (no job number), so the same job lands in the same place when
  the sweep is run again.
- `resume=true` reruns the newest sweep launched with the same overrides
  (`resume=<sweep dir>` names one): jobs already `completed` are skipped, the
  rest run again. A job holds a lock on its directory while it runs, so two
  resumes of one sweep never write into the same job.
- Jobs record their own failures (status `failed` in `metrics.json`) and return,
  so one bad job never stops the others; `SweepSummary` then lists them, writes
  `summary.md` into the sweep dir, and the CLI exits non-zero.
- Every job writes the same union of HParams keys (`hparam_schema`), so
  TensorBoard's HParams table sorts and filters across the whole sweep.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from ..errors import ConfigError

log = logging.getLogger("sampler")

# Set by the last multirun in this process; the CLI turns it into the exit code.
last_sweep: dict[str, Any] = {}

TIME_FORMAT = "%Y-%m-%d_%H-%M-%S.%f"
MAX_NAME = 200  # bytes; file systems stop at 255
LOCK = ".lock"


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


def _same_sweep(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith("resume="))


def find_sweep(root: Path, overrides: list[str]) -> Path | None:
    """The newest sweep under `root` launched with these task overrides (`resume` aside)."""
    wanted = _same_sweep(overrides)
    for path in sorted(root.glob("*/multirun.yaml"), reverse=True):
        try:
            earlier = OmegaConf.load(path).hydra.overrides.task
        except Exception:  # a sweep dir being written, or not Hydra's: not ours to resume
            continue
        if _same_sweep(list(earlier)) == wanted:
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


def _sweep_dir_resolver(root: str, resume: Any, overrides: Any) -> str:
    from sampler.cli.errors import USER_ERROR, report

    try:
        return str(resolve_sweep_dir(root, resume, [str(o) for o in overrides]))
    except ConfigError as e:  # OmegaConf would wrap it into a traceback; say it plainly
        report(e)
        raise SystemExit(USER_ERROR) from None


def job_dir_name(override_dirname: str) -> str:
    """A job's directory: its overrides, so a rerun finds it; hashed when too long."""
    if not override_dirname:
        return "default"
    if len(override_dirname.encode()) <= MAX_NAME:
        return override_dirname
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    return override_dirname.encode()[:MAX_NAME - 11].decode(errors="ignore") + "~" + digest


def register_resolvers() -> None:
    """`${sampler.sweep_dir:...}` and `${sampler.job_dir:...}`, used in configs/train.yaml."""
    # Cached, so the launcher, the jobs and the end-of-sweep callback agree on one dir.
    OmegaConf.register_new_resolver("sampler.sweep_dir", _sweep_dir_resolver, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("sampler.job_dir", job_dir_name, replace=True)


# ---------------------------------------------------------------- jobs of a resumed sweep

def completed_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The job's metrics if an earlier attempt completed it."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if metrics.get("status") == "completed" else None


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


# ---------------------------------------------------------------- HParams: one schema per sweep

def hparam_schema() -> dict[str, str]:
    """Every config key any shipped option can have, and the one type all jobs write it as.

    A key missing from some option of its group (sgd's `momentum`, absent from
    adamw) is still written by every job ("none" where absent), so a sweep over
    `optim=sgd,adamw` gets both columns. TensorBoard refuses to filter a column
    whose values mix types, so the type comes from the shipped defaults, not from
    the job: `number` when every option has a number there, `bool` (written as
    the strings "true"/"false", a discrete domain) when every option has a bool,
    `string` otherwise.
    """
    root = resources.files("sampler.configs")
    top = OmegaConf.to_container(OmegaConf.create((root / "train.yaml").read_text()))
    values = {k: [v] for k, v in top.items() if k not in ("defaults", "hydra", "resume")}  # type: ignore[union-attr]
    for group in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        if group.name in ("hydra", "experiment") or group.name.startswith("_"):
            continue
        names = sorted(f.name[:-5] for f in group.iterdir() if f.name.endswith(".yaml"))
        options = [_option_values(group, name) for name in names]
        for key in sorted({k for o in options for k in o}):
            found = [o[key] for o in options if key in o]
            if key.startswith(group.name + ".") and len(found) < len(options):
                found.append(None)  # an option without the key: its jobs write "none"
            values.setdefault(key, []).extend(found)
    return {key: hparam_kind(v) for key, v in values.items()}


def _option_values(group: Any, name: str) -> dict[str, Any]:
    """One option's flat keys, after the siblings it extends (`defaults: [progressive, _self_]`)."""
    from .record import flatten

    text = (group / f"{name}.yaml").read_text()
    cfg: dict[str, Any] = OmegaConf.to_container(OmegaConf.create(text)) or {}  # type: ignore[assignment]
    out: dict[str, Any] = {}
    for base in cfg.pop("defaults", None) or []:
        if isinstance(base, str) and base != "_self_" and (group / f"{base}.yaml").is_file():
            out.update(_option_values(group, base))
    global_package = any(line.strip() == "# @package _global_" for line in text.splitlines()[:5])
    out.update(flatten(cfg, "" if global_package else group.name + "."))
    return out


def hparam_kind(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "number"
    return "string"


# ---------------------------------------------------------------- the end of a sweep

class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from rich.console import Console
        from rich.markup import escape

        from ..analysis.compare import find_runs

        sweep_dir = Path(config.hydra.sweep.dir)
        runs = find_runs([sweep_dir], strict=False)
        failed = [r for r in runs if r.status != "completed"]
        last_sweep.clear()
        last_sweep.update(dir=str(sweep_dir), jobs=len(runs), failed=[r.name for r in failed])
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"sweep {sweep_dir}: {len(runs) - len(failed)} of {len(runs)} jobs completed")
        for run in failed:
            console.print(f"  [red]{run.status}[/red] {escape(f'{run.name}: {run.error}')}")
        summary = write_summary(sweep_dir, runs)
        if summary is not None:
            console.print(f"summary: {summary}   (sampler compare {sweep_dir} for more)")


def write_summary(sweep_dir: Path, runs: list[Any]) -> Path | None:
    """`summary.md` in the sweep dir: the comparison table, or why there is none."""
    from .atomic import write_text
    from ..analysis.compare import build_report, to_markdown

    path = sweep_dir / "summary.md"
    try:
        text = to_markdown(build_report(runs))
    except ConfigError as e:  # e.g. no job completed, so there is no metric to compare
        text = f"# {sweep_dir.name}\n\nNo comparison: {e.key}: {e.message}\n"
    except Exception:  # the summary must never turn a finished sweep into a crash
        log.exception("could not write %s", path)
        return None
    write_text(path, text)
    return path
