"""Optuna through Hydra: `hydra/sweeper=optuna_study` (configs/hydra/sweeper/optuna_study.yaml).

hydra-optuna-sweeper's sweeper, changed where a study of sampler runs otherwise goes wrong:

- each trial writes to its own directory, `trial=<number>,<overrides>`: two trials may
  draw the same values, and a job directory named from its overrides alone
  (configs/train.yaml) would be shared;
- the study lives in the sweep dir (SQLite, `optuna.db`) and the sweep dir holds
  `multirun.yaml`, so `resume=true` finds both: the trials an interrupted study left
  running count as failed, and only the trials still missing from `n_trials` run;
- a trial whose run failed is told to Optuna as failed with the run's own error (not
  "Return value must be float-castable"), and the study goes on;
- a study in which no trial completed ends with the summary and one paragraph, not
  Optuna's `ValueError: No trials are completed yet`.

The value each trial returns is the task function's: the run's headline validation
metric, or `optimized_metric` (cli/task.py, experiments/train/tasks.py `objective`).
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper
from omegaconf import OmegaConf

from . import sweep

log = logging.getLogger("sampler")


class TrialFailed(Exception):
    """A trial without a value: what its run recorded. Optuna's sweeper tells it as failed."""


def _run_dir(ret: JobReturn) -> Path | None:
    output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    return Path(str(output_dir)) if output_dir else (Path(ret.working_dir) if ret.working_dir else None)


def why_no_value(run_dir: Path | None, optimized_metric: str | None) -> str:
    """What the trial's metrics.json says about its missing value."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text()) if run_dir else {}
    except (OSError, ValueError):
        metrics = {}
    status = metrics.get("status", "no metrics")
    if status == "completed":
        wanted = f"optimized_metric={optimized_metric}" if optimized_metric else "the headline validation metric"
        return (f"completed, but its metrics.json has no number for {wanted}; set optimized_metric to one of "
                "its keys (val/acc_best, test/acc, ...)")
    return f"{status}: {metrics.get('error') or 'no error recorded'}"


class _TrialLauncher:
    """The sweeper's launcher, with a trial that returned no value made a failed JobReturn
    that carries its run's error (the sweeper tells Optuna FAIL and logs the message)."""

    def __init__(self, launcher: Any, optimized_metric: str | None):
        self.launcher, self.optimized_metric = launcher, optimized_metric

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns = list(self.launcher.launch(job_overrides, initial_job_idx))
        for i, ret in enumerate(returns):
            if ret.status == JobStatus.COMPLETED and ret.return_value is None:
                trial = _trial_number(job_overrides[i])
                failed = TrialFailed(f"trial {trial}: {why_no_value(_run_dir(ret), self.optimized_metric)}")
                returns[i] = JobReturn(overrides=ret.overrides, cfg=ret.cfg, hydra_cfg=ret.hydra_cfg,
                                       working_dir=ret.working_dir, task_name=ret.task_name,
                                       status=JobStatus.FAILED, _return_value=failed)
        return returns


def _trial_number(overrides: Sequence[str]) -> str:
    for o in overrides:
        if o.startswith("hydra.sweep.subdir="):
            return o.split("trial_dir:", 1)[-1].split(",", 1)[0]
    return "?"


class _Study:
    """What sampler changes in hydra-optuna-sweeper's OptunaSweeperImpl (mixed in before it,
    whose attributes these use: config, launcher, n_trials, storage, study_name, max_failure_rate)."""

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        self.launcher = _TrialLauncher(self.launcher, self.config.get("optimized_metric"))

    def _configure_trials(self, trials: list[Any], search_space_distributions: Any,
                          fixed_params: Any) -> Sequence[Sequence[str]]:
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        # Quoted: the override grammar takes a nested interpolation with a comma only as a string.
        return [(*o, "hydra.sweep.subdir='${sampler.trial_dir:%d,${hydra.job.override_dirname}}'" % t.number)
                for t, o in zip(trials, overrides)]

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # what resume=true looks for
        asked = self.n_trials
        self.n_trials = self._trials_left()
        try:
            super().sweep(arguments)
        except TrialFailed as e:  # more failures in a batch than max_failure_rate allows
            raise sweep.SweepAborted("hydra.sweeper.max_failure_rate", f"more than {self.max_failure_rate:g} of a "
                                     f"batch of trials failed ({e}); the study stops there. Fix the cause and "
                                     "run the same command with resume=true to go on with it", 1, sweep_dir) from None
        except ValueError as e:  # best_trial of a study without a completed trial; its words depend on the storage
            if self._completed() != 0 and "No trials are completed yet" not in str(e):
                raise
            raise sweep.SweepAborted("hydra.sweeper", f"no trial of the study completed with a value to optimise "
                                     f"({asked} asked for; their errors are listed above and in summary.md), so "
                                     "there are no best parameters. Fix the cause and run the same command with "
                                     f"resume=true: the study in {self.storage} goes on", 1, sweep_dir) from None

    def _completed(self) -> int | None:
        """Completed trials in the stored study; None without a storage to ask."""
        if not self.storage or not self.study_name:
            return None
        import optuna
        from optuna.trial import TrialState

        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _trials_left(self) -> int:
        """`n_trials` minus the trials the stored study finished; the ones an interrupted
        study left running are failed now, and do not count."""
        if not self.storage or not self.study_name:
            return self.n_trials
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # no such study yet
            return self.n_trials
        trials = study.get_trials(deepcopy=True)
        done = sum(1 for t in trials if t.state.is_finished())
        stale = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        for t in stale:
            study.tell(t.number, state=TrialState.FAIL)
        left = max(0, self.n_trials - done)
        log.info("optuna: study %r has %d finished trials%s; %d more to run", self.study_name, done,
                 f" ({len(stale)} left running by an interrupted sweep: failed now)" if stale else "", left)
        return left


@functools.lru_cache(maxsize=None)
def _study_impl() -> type:
    """OptunaSweeperImpl with sampler's changes, made on first use: it imports optuna (1-2 s),
    which the CLI, registering this sweeper at every start, must not pay."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    return type("StudyImpl", (_Study, OptunaSweeperImpl), {})


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper with sampler's implementation (the module says what changes)."""

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: Any, n_trials: int, n_jobs: int,
                 max_failure_rate: float, search_space: Any, custom_search_space: Any, params: Any) -> None:
        self.sweeper = _study_impl()(sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
                                     search_space, custom_search_space, params)
