"""`sampler`: train, compare, inspect, ls, bench, data. Each command calls into `sampler.experiments`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from .errors import USER_ERROR, interrupted, report  # loaded by cli/__init__.py already

try:  # Ctrl-C while the CLI loads, after torch (cli/__init__.py): one line too
    import typer
except KeyboardInterrupt:
    interrupted(loading=True)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Convolutional-block ablations in PyTorch, configured with Hydra.")

HYDRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(context_settings=HYDRA_ARGS)
def train(ctx: typer.Context) -> None:
    """Train one config, or a sweep with -m. Takes Hydra overrides and flags.

    [bold]Examples[/bold]

      sampler train model.pool=avg trainer.epochs=5
      sampler train -m model.pool=max,avg seed=0,1,2
      sampler train -m hydra/launcher=joblib model.act=relu,gelu
      sampler train experiment=pool_max_vs_avg
      sampler train --cfg job          (print the composed config)
      sampler train --hydra-help       (Hydra's own flags)
    """
    from sampler.experiments.errors import ConfigError
    from sampler.experiments.tools.config import check_override_keys, check_sweep_values, prefetch_data
    from sampler.experiments.analysis.summary import last_sweep, summarize
    from sampler.experiments.runs.sweep import SweepAborted

    from . import hydra_files
    from .task import check_hydra_modes, check_output_dirs, check_resume_args, last_run, resumed_args
    from .task import train as hydra_train

    args = resumed_args(ctx.args)
    # Hydra reads its overrides and flags from sys.argv (it refuses injected
    # argv: hydra issues 215, 1578, 2459), so rebuild it from Typer's extras.
    sys.argv = ["sampler", *args]
    last_sweep.clear()
    last_run.clear()
    try:
        check_hydra_modes(args)
        check_output_dirs(args)
        check_resume_args(args)
        check_override_keys(args)
        check_sweep_values(args)
        prefetch_data(args)
        hydra_files.install()  # .hydra/ written atomically; a full disk there is one paragraph
        hydra_train()
    except SweepAborted as e:  # a launcher or sweeper that cannot go on: the summary so far, then why
        if e.sweep_dir is not None:
            summarize(e.sweep_dir)
        report(ConfigError(e.key, e.message))
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        interrupted(_left_by_ctrl_c(last_run, last_sweep.get("dir")))
    except ConfigError as e:  # raised before any job started
        report(e)
        raise typer.Exit(e.exit_code)
    if last_sweep.get("failed"):
        raise typer.Exit(1)


def _left_by_ctrl_c(run: dict, sweep_dir: str | None) -> str:
    """What Ctrl-C left behind, truthfully: the run or sweep dir, its status, what resume= would do."""
    from sampler.experiments.runs.read import read_run
    from sampler.experiments.runs.sweep import is_run_dir
    from sampler.experiments.train.runner import CHECKPOINT

    if sweep_dir:
        return (f"interrupted: the sweep in {sweep_dir} stopped; `sampler train -m resume={sweep_dir}` runs its jobs "
                "that did not complete, each from its last checkpoint where it has one")
    if not run:
        return "interrupted before a run started; nothing was trained"
    run_dir = run["dir"]
    if not is_run_dir(run_dir):
        return f"interrupted before {run_dir} recorded anything; nothing to continue, run the command again"
    status = read_run(run_dir).status
    said = f"interrupted: {run_dir} records status '{status}'"
    if status == "completed":
        return said + "; nothing to continue"
    if (run_dir / CHECKPOINT).is_file():
        return said + f"; `sampler train resume={run_dir}` continues it from its last checkpoint"
    why = "trainer.checkpoint=false" if not run["checkpoint"] else "no epoch had finished"
    return said + f"; it has no checkpoint ({why}), so `sampler train resume={run_dir}` trains it again from epoch 1"


@app.command(context_settings=HYDRA_ARGS)
def inspect(ctx: typer.Context) -> None:
    """Per-layer shapes, params and FLOPs of the model the overrides describe (no data read).

      sampler inspect model.widths=[16,32] model.pool=avg
    """
    from sampler.experiments.tools.inspect import print_model_summary

    _user_errors(_overrides_only, "inspect", ctx.args)
    _user_errors(print_model_summary, ctx.args)


@app.command("ls")
def list_choices() -> None:
    """List every registry (pool, norm, act, head, optimizer, schedule, dataset) and the presets."""
    from sampler.experiments.tools.listing import print_registries

    _user_errors(print_registries)


@app.command()
def bench(
    epochs: int = typer.Option(2, help="epochs for both pipelines"),
    subset: Optional[int] = typer.Option(None, help="training images (class-balanced); default all"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="like data.root; default $SAMPLER_DATA or data/"),
    widths: List[int] = typer.Option([32, 64, 128, 256], help="stage widths of the benchmarked stack"),
    order: str = typer.Option("conv,norm,act,pool", help="like model.order, comma-separated"),
    batch_size: int = typer.Option(64, "--batch-size", help="both pipelines; the lr scales with it (0.05 per 64)"),
    precision: str = typer.Option("auto", help="sampler's pipeline only: auto (as trainer.precision: bf16 on a CPU "
                                  "with AVX-512 BF16 or AMX, else fp32) | bf16 | fp32; the tutorial's is fp32"),
    seed: int = typer.Option(0),
    skip_tutorial: bool = typer.Option(False, help="only time sampler's pipeline"),
    peak_only: bool = typer.Option(False, "--peak-only", help="only measure this machine's peak (a conv like the "
                                   "stack's, forward+backward) in each precision, then stop: no data read"),
    peak_seconds: float = typer.Option(1.0, "--peak-seconds", help="how long the peak is timed, per precision"),
    profile: bool = typer.Option(True, help="after timing, profile a few of sampler's steps: the time of the data, "
                                 "convolutions, normalization, activations, pooling and optimizer"),
    compile: bool = typer.Option(False, "--compile", help="sampler's pipeline through torch.compile (built and "
                                 "warmed up before the timing; no profile); the tutorial's stays eager"),
) -> None:
    """Time sampler's in-memory pipeline against the tutorial one, same stack, epochs and seed.

    The tutorial pipeline is torchvision ImageFolder + per-image PIL transforms + a DataLoader, fp32.
    Both rates are also given as a share of this machine's peak, measured first in the same run.
    """
    from sampler.experiments.tools.bench import run_bench

    _user_errors(run_bench, epochs=epochs, subset=subset, data_root=data_root, widths=widths,
                 seed=seed, skip_tutorial=skip_tutorial, batch_size=batch_size,
                 order=[s.strip() for s in order.split(",")], precision=precision, peak_only=peak_only,
                 peak_seconds=peak_seconds, profile=profile, compile=compile)


@app.command(context_settings=HYDRA_ARGS)
def data(ctx: typer.Context) -> None:
    """Find the data the overrides point at, decode it into the cache, and show the splits.

      sampler data data.root=../shared/datasets
    """
    from sampler.experiments.tools.listing import print_data_summary

    _user_errors(_overrides_only, "data", ctx.args)
    _user_errors(print_data_summary, ctx.args)


def _overrides_only(command: str, args: list[str]) -> None:
    """`inspect` and `data` compose one config from overrides: Hydra's flags mean nothing to them."""
    from sampler.experiments.errors import ConfigError

    from .task import hydra_modes

    flags = [a for a in args if a.startswith("-")]
    if not flags:
        return
    if "--multirun" in hydra_modes(flags):
        hint = f"it shows one config's {'model' if command == 'inspect' else 'data'}: run it once per value"
    elif "--cfg" in hydra_modes(flags):
        hint = "to print the composed config, use `sampler train --cfg job <overrides>`"
    else:
        hint = "Hydra's flags go to `sampler train`"
    raise ConfigError(flags[0], f"`sampler {command}` takes only overrides (key=value), not {' '.join(flags)}; {hint}")


@app.command()
def compare(
    paths: List[Path] = typer.Argument(..., help="sweep dirs, run dirs or outputs/: every run below is found"),
    metric: Optional[str] = typer.Option(None, help="a number in the runs' metrics.json; default: test/miou "
                                         "for segmentation runs, test/acc otherwise"),
    by: List[str] = typer.Option([], help="group by these config keys (repeat or comma-separate); default: "
                                 "every key that differs, minus the seed"),
    ignore: List[str] = typer.Option([], help="config keys that must not split variants"),
    format: str = typer.Option("table", "--format", help="table | md | csv | json"),
    alpha: float = typer.Option(0.05, help="test level; the CIs are (1 - alpha)"),
    goal: Optional[str] = typer.Option(None, help="max | min; default: min for losses, times and costs"),
    plot: bool = typer.Option(False, "--plot", help="write PNG figures (and a TensorBoard run) into the sweep dir"),
    out: Optional[Path] = typer.Option(None, help="where --plot writes; default: the first path"),
    wide: bool = typer.Option(False, "--wide", help="every column: std, min–max, the test and every cost "
                              "(params, MFLOPs, img/s, time, peak MB); default: what fits the terminal"),
    baseline: Optional[str] = typer.Option(None, help="test every variant against this one (its label or value, "
                                           "e.g. avg) instead of the best"),
    effect: Optional[float] = typer.Option(None, help="estimate the seeds needed to separate a difference this "
                                           "large (points of % for accuracies, e.g. 0.5)"),
    power: float = typer.Option(0.8, help="with --effect: the chance of finding that difference"),
) -> None:
    """Compare variants across seeds: mean, std, CI, a test against the best, and what each costs.

      sampler compare outputs/multirun/<time>
      sampler compare outputs/ --metric test/acc --by model.pool --format md > table.md
      sampler compare outputs/multirun/<time> --plot
      sampler compare outputs/multirun/<time> --wide
      sampler compare outputs/multirun/<time> --baseline avg --effect 0.5
    """
    from sampler.experiments.analysis.compare import compare as run_compare

    _user_errors(run_compare, paths, metric=metric, by=by, ignore=ignore, fmt=format, alpha=alpha,
                 goal=goal, plot=plot, out=out, wide=wide, baseline=baseline, effect=effect, power=power)


@app.command()
def claims(
    sweeps: Optional[Path] = typer.Argument(None, help="where the claim presets' sweeps are: the newest sweep of "
                                            "each preset below it is read; default outputs/multirun"),
    out: Path = typer.Option(Path("docs/claims.md"), help="the report to write (markdown)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="CIFAR-10 and CamVid for the claims "
                                             "computed on real images; default $SAMPLER_DATA or data/"),
) -> None:
    """Judge the course notes' claims (pooling, BatchNorm, in-place ReLU, upsampling) from the
    presets' sweeps and exact computations; write a report with verdicts and commands.

      sampler train -m experiment=bn_convergence      (and the other presets it names)
      sampler claims
    """
    from sampler.experiments.tools.claims import print_claims

    _user_errors(print_claims, sweeps, out, data_root)


def _user_errors(fn, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    from omegaconf.errors import OmegaConfBaseException
    from hydra.errors import HydraException

    from sampler.experiments.errors import ConfigError

    try:
        fn(*args, **kwargs)
    except ConfigError as e:
        report(e)
        raise typer.Exit(e.exit_code)
    except (HydraException, OmegaConfBaseException) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(USER_ERROR)
    except KeyboardInterrupt:
        interrupted()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside a command: Typer's own start-up
        interrupted()


if __name__ == "__main__":
    main()
