"""What a run leaves behind (DESIGN §4, §5): TensorBoard events and `metrics.json`.

`metrics.json` is rewritten atomically after every epoch with `status: running`,
so readers always see a complete file, and a final time with the end status:
completed, failed, interrupted or diverged. It is strict JSON: a figure that is NaN or
infinite is written as null, named in `non_finite` and warned about once in the log
(TensorBoard keeps the value itself). A run whose evaluation alone was not finite still
ends `completed`: it trained to the end, and the null figures say what went wrong.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from sampler.blocks.registry import is_number

from .atomic import write_error, write_json
from .hparams import NOT_HPARAMS, flatten, hparam_kind, hparam_schema, hparam_value
from .naming import trial_label
from .provenance import git_state, hardware, versions

# cancelled and timeout: SLURM ended the job; pending: queued in SLURM, not started yet.
STATUSES = ("running", "completed", "failed", "interrupted", "diverged", "cancelled", "timeout", "pending")

log = logging.getLogger("sampler")


class RunRecord:
    """`resumed` continues a run from its checkpoint: the earlier metrics are kept (the
    history as the checkpoint has it), the wall time adds up, and TensorBoard drops
    whatever the earlier attempt logged after the checkpoint (`purge_step`)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], overrides: list[str],
                 hparam_domains: Mapping[str, list[Any]] | None = None,
                 hparam_metrics: Sequence[str] = ("val/acc_best", "test/acc"), tensorboard: bool = True,
                 resumed: Mapping[str, Any] | None = None, swept: Sequence[str] = ()):
        self.run_dir = Path(run_dir)
        self.hparam_metrics = tuple(hparam_metrics)  # the HParams table's metric columns, headline first
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()
        self.metrics: dict[str, Any] = {
            "status": "running", "seed": config.get("seed"), "overrides": list(overrides),
            "task": config.get("task", {}).get("name"), "config": config,
            "started_at": datetime.now(timezone.utc).isoformat(), "versions": versions(), "hardware": hardware(),
            "git": git_state(), "process": {"host": socket.gethostname(), "pid": os.getpid()},
            "history": [], "error": None,
        }
        self.earlier_s = 0.0
        self.warned: set[str] = set()  # the figures already reported as not finite
        if resumed is not None:
            self.earlier_s = float(resumed.get("time/total_s") or 0.0)
            self.metrics["started_at"] = resumed.get("started_at") or self.metrics["started_at"]
            self.metrics["history"] = list(resumed["history"])
            self.metrics["resumes"] = [*(resumed.get("resumes") or []), {
                "at": datetime.now(timezone.utc).isoformat(), "epoch": len(resumed["history"]),
                "step": resumed.get("step", 0)}]
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = len(self.metrics["history"]) + 1 if resumed is not None else None
            # Its first event is written and flushed as it is made: a full disk fails here,
            # before metrics.json, so the run dir keeps what it had.
            _quiet_writer_threads()
            try:
                self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge)
                if resumed is None:  # the earlier attempt's events file holds them already
                    self._write_hparams(config, hparam_domains or {}, swept,
                                        trial_label(flatten(config), swept, overrides))
                    self._write_layout()
            except OSError as e:
                raise write_error(self.run_dir, e) from e
        self.save()

    def _write_hparams(self, config: dict[str, Any], domains: Mapping[str, list[Any]], swept: Sequence[str],
                       trial: str) -> None:
        # Into this job's own writer: add_hparams would make a stray sub-run
        # (pytorch issue 32651). Every job writes the same keys, each as the same
        # type (hparams.hparam_schema: "none" where absent), because TensorBoard
        # shows the experiment of one arbitrary job and refuses to filter a column
        # that mixes types. Metric values are the scalars logged under the same
        # tags at the end of the run. The swept keys come first and are marked as
        # differing, which is what TensorBoard sorts and shows first; the session's
        # group name, the table's Trial ID, is the short label of their values.
        from torch.utils.tensorboard.summary import hparams

        values = flatten(config)
        kinds = hparam_schema()
        hp: dict[str, Any] = {}
        discrete: dict[str, list[Any]] = {}
        focus = [k if k in values or f"{k}.name" not in values else f"{k}.name" for k in swept]
        for key in [*focus, *sorted(set(kinds) | set(values), key=_column_order)]:
            if key in NOT_HPARAMS or key.startswith("hydra.") or key in hp:
                continue
            value, kind = values.get(key), kinds.get(key) or hparam_kind([values.get(key)])
            if kind == "number" and is_number(value):
                hp[key] = value
            else:  # bools too: torch would write them as 0/1 numbers
                hp[key] = str(value).lower() if isinstance(value, bool) else str(hparam_value(value))
            if kind == "bool":
                discrete[key] = ["false", "true"]
            if key in domains:
                discrete[key] = [str(hparam_value(x)) for x in domains[key]]
        for key, domain in discrete.items():
            if hp[key] not in domain:  # never let a domain hide the value this run used
                domain.append(hp[key])
        exp, ssi, sei = hparams(hp, {m: 0.0 for m in self.hparam_metrics}, hparam_domain_discrete=discrete)
        _edit_plugin_data(exp, lambda data: [info.__setattr__("differs", info.name in focus)
                                             for info in data.experiment.hparam_infos])
        _edit_plugin_data(ssi, lambda data: data.session_start_info.__setattr__("group_name", trial))
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)

    def _write_layout(self) -> None:
        """Train and validation curves of one metric on one chart (TensorBoard's Custom
        Scalars tab): loss and accuracy, and the headline metric when it is another."""
        metrics = list(dict.fromkeys(["loss", "acc", *(m.split("/", 1)[1].removesuffix("_best")
                                                      for m in self.hparam_metrics[:1])]))
        charts = {m: ["Multiline", [f"^train/{m}$", f"^val/{m}$"] if m in ("loss", "acc") else [f"^val/{m}$"]]
                  for m in metrics}  # regular expressions: anchored, so val/acc leaves val/acc_best out
        self.writer.add_custom_scalars({"train and val": charts})

    def update(self, values: Mapping[str, Any]) -> None:
        self.metrics.update(values)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self._events("add_scalar", values, step)

    def histograms(self, values: Mapping[str, Any], step: int) -> None:
        self._events("add_histogram", values, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        self._events("add_image", {tag: image}, step)

    def _events(self, method: str, values: Mapping[str, Any], step: int) -> None:
        """Into TensorBoard, flushed from this thread: a write its writer thread failed (a
        full disk) comes out here, once, as a WriteError."""
        if self.writer is not None:
            try:
                for tag, value in values.items():
                    getattr(self.writer, method)(tag, value, step)
                self.writer.flush()
            except OSError as e:
                raise write_error(self.run_dir, e) from e

    def epoch(self, row: dict[str, Any]) -> None:
        """One epoch's figures: into the history, TensorBoard and the metrics file."""
        self.metrics["history"].append(row)
        self.scalars({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])
        self.save()

    def save(self) -> None:
        self.metrics["time/total_s"] = round(self.earlier_s + time.perf_counter() - self.start, 3)
        bad: dict[str, float] = {}
        metrics = _finite_or_null(self.metrics, "", bad)
        if bad:
            metrics["non_finite"] = sorted(bad)
        for name in sorted(set(bad) - self.warned):
            self.warned.add(name)
            log.warning("%s was %s; metrics.json holds null there. %s", name, bad[name], _non_finite_hint(name))
        write_json(self.run_dir / "metrics.json", metrics)

    def finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        """The end status, into metrics.json and TensorBoard. When the disk refuses even
        that, metrics.json keeps its last good content and the WriteError goes up."""
        assert status in STATUSES
        self.metrics.update(status=status, error=error,
                            finished_at=datetime.now(timezone.utc).isoformat())
        try:
            if self.writer is not None:
                final_step = len(self.metrics["history"])
                self.scalars({m: self.metrics[m] for m in self.hparam_metrics
                              if isinstance(self.metrics.get(m), (int, float))}, final_step)
        finally:
            self.close()
            self.save()
        return self.metrics

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except OSError:
                pass  # a full disk: the events file keeps what reached it


class RunLogFile(logging.FileHandler):
    """The run's train.log (configs/hydra/job_logging). A write the disk refuses (full,
    read-only) turns the file off with one warning naming it and the free space, instead
    of logging's "--- Logging error ---" traceback for every later line; the console
    keeps the whole log."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def flush(self) -> None:
        if not self.failed:
            super().flush()

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError) or self.failed:
            super().handleError(record)
            return
        self.failed = True  # before the warning, which comes back through this handler
        refused = write_error(Path(self.baseFilename), error)
        log.warning("could not write the log file %s (%s); the run goes on, logging to the console only",
                    refused.key, refused.message)


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread keeps the error of a failed write for the writing thread,
    whose next add or flush raises it (`_events`), and then lets it end the thread too,
    which Python prints as an "Exception in thread" traceback before sampler's own
    message. An OSError ending that thread is left to the main thread to report; every
    other thread and error still goes to the hook that was in place."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "keeps_tensorboard_quiet", False):
        return

    def hook(args: Any) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            previous(args)

    hook.keeps_tensorboard_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _finite_or_null(value: Any, name: str, bad: dict[str, float]) -> Any:
    """`value` with every NaN or infinite float as None, since strict JSON parsers refuse
    Python's bare NaN; `bad` gets each such figure's name (a history row's figure by its
    own name, `val/loss`) and value."""
    if isinstance(value, float) and not math.isfinite(value):
        bad[name.removeprefix("history.")] = value
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v, f"{name}.{k}" if name else str(k), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v, name, bad) for v in value]
    return value


def _non_finite_hint(name: str) -> str:
    if name.startswith(("val/", "test/")):
        return ("The model's output in evaluation mode was not finite while training went on: look at what "
                "eval mode uses and training does not, BatchNorm's running statistics (model.norm_args.momentum, "
                "model.norm_args.eps), or try trainer.precision=fp32.")
    return "Readers of metrics.json see it as missing."


# After the swept keys, the HParams columns go model first: TensorBoard ticks the first few.
GROUP_ORDER = ("model", "head", "optim", "sched", "trainer", "task", "data", "seed")


def _column_order(key: str) -> tuple[int, str]:
    group = key.split(".", 1)[0]
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), key)


def _edit_plugin_data(summary: Any, edit: Any) -> None:
    """Change the HParams plugin data that torch's `hparams()` put into `summary`."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    metadata = summary.value[0].metadata
    data = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
    edit(data)
    metadata.plugin_data.content = data.SerializeToString()
