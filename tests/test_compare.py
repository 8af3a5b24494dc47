"""`sampler compare`: discovery, grouping, statistics, outputs and plots.

Every number the command prints is recomputed here from the runs' metrics.json
with numpy and the t distribution by hand (never through the code under test),
on run directories written by the test and on a real tiny sweep on CIFAR-10.
`compare` only reads files (no Hydra state to leak), so it runs in-process
through Typer's test runner; training runs in a subprocess (the `cli` fixture).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import TINY, read_metrics, run_dirs
from typer.testing import CliRunner

from sampler.cli.app import app
from sampler.experiments.errors import ConfigError
from sampler.experiments.runs.atomic import write_json
from sampler.experiments.analysis.plots import history_band, pareto_front


# ---------------------------------------------------------------- independent statistics

def t_interval(x: list[float], alpha: float = 0.05) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    half = stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def paired_p(a: list[float], b: list[float]) -> float:
    d = np.asarray(a) - np.asarray(b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


def welch_p(a: list[float], b: list[float]) -> float:
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


def check_variant(row: dict, scores: list[float]) -> None:
    """A json row of `sampler compare` against numpy on the same scores."""
    x = np.asarray(scores)
    assert row["n"] == len(x)
    assert row["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert row["min"] == pytest.approx(x.min()) and row["max"] == pytest.approx(x.max())
    if len(x) > 1:
        assert row["std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        lo, hi = t_interval(scores)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    else:
        assert row["std"] is None and row["ci_low"] is None


# ---------------------------------------------------------------- run directories written by hand

def fake_run(root: Path, name: str, seed: int, status: str = "completed", pool: str = "max",
             epochs: int = 1, task: str = "classification", **metrics: float) -> Path:
    run = root / name
    config = {"seed": seed, "model": {"pool": pool, "widths": [8, 16]}, "trainer": {"epochs": epochs},
              "data": {"root": f"/somewhere/{name}", "subset": 200}, "task": {"name": task}}
    history = [{"epoch": e + 1, "val/acc": metrics.get("test/acc", 0.0) * (e + 1) / epochs,
                "train/loss": 2.0 - e} for e in range(epochs)]
    write_json(run / "metrics.json", {
        "status": status, "seed": seed, "config": config, "history": history,
        "overrides": [f"model.pool={pool}", f"seed={seed}", "data.subset=200", f"trainer.epochs={epochs}"],
        "error": "ValueError: boom" if status == "failed" else None, "precision": "fp32", "device": "cpu",
        "model/params": 1000 if pool == "max" else 1200, "model/flops": 2e6, "time/total_s": 10.0 + seed,
        "memory/peak_mb": 500.0, "memory/step_peak_mb": 40.0 if pool == "max" else 30.0,
        "train/images_per_s": 3000.0, **metrics})
    return run


MAX = [0.61, 0.64, 0.60]
AVG = [0.58, 0.63, 0.55]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """max vs avg, seeds 0-2 each: a paired comparison."""
    root = tmp_path / "sweep"
    for seed, (m, a) in enumerate(zip(MAX, AVG)):
        fake_run(root, f"max_{seed}", seed, pool="max", **{"test/acc": m, "test/loss": 1 - m})
        fake_run(root, f"avg_{seed}", seed, pool="avg", **{"test/acc": a, "test/loss": 1 - a})
    return root


@pytest.fixture
def compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`sampler compare ARGS...` in tmp_path; returns Typer's result (stdout, stderr, exit_code)."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, check: bool = False):
        result = runner.invoke(app, ["compare", *args])
        if check and result.exit_code != 0:
            raise AssertionError(f"sampler compare {' '.join(args)} exited {result.exit_code}:\n"
                                 f"{result.stdout}\n{result.stderr}\n{result.exception!r}")
        return result

    return run


def compare_json(compare, *args: str) -> dict:
    return json.loads(compare(*args, "--format", "json", check=True).stdout)


def by_label(report: dict) -> dict[str, dict]:
    return {row["variant"]: row for row in report["variants"]}


def test_paired_test_and_intervals_match_numpy(compare, sweep: Path) -> None:
    report = compare_json(compare, str(sweep))
    rows = by_label(report)
    assert report["keys"] == ["model.pool"] and list(rows) == ["model.pool=max", "model.pool=avg"]
    check_variant(rows["model.pool=max"], MAX)
    check_variant(rows["model.pool=avg"], AVG)
    avg = rows["model.pool=avg"]
    assert avg["test"] == "paired t"
    assert avg["p"] == pytest.approx(paired_p(MAX, AVG), rel=1e-9)
    assert avg["verdict"] == ("worse" if paired_p(MAX, AVG) < 0.05 else "not distinguishable")
    assert rows["model.pool=max"]["verdict"] == "best"
    assert rows["model.pool=avg"]["model/params"] == 1200 and rows["model.pool=max"]["model/flops"] == 2.0
    assert report["common"] == {"data.subset": 200, "device": "cpu", "precision": "fp32", "trainer.epochs": 1}


def test_a_stricter_level_changes_the_verdict(compare, sweep: Path) -> None:
    p = paired_p(MAX, AVG)
    assert 0.01 < p < 0.5, "the fixture's numbers should sit between the two levels"
    loose = by_label(compare_json(compare, str(sweep), "--alpha", str(min(0.99, 2 * p))))
    strict = by_label(compare_json(compare, str(sweep), "--alpha", "0.01"))
    assert loose["model.pool=avg"]["verdict"] == "worse"
    assert strict["model.pool=avg"]["verdict"] == "not distinguishable"
    lo, hi = t_interval(MAX, alpha=0.01)
    assert strict["model.pool=max"]["ci_low"] == pytest.approx(lo)
    assert strict["model.pool=max"]["ci_high"] == pytest.approx(hi)


def test_welch_when_the_variants_ran_different_seeds(compare, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed, m in enumerate(MAX):
        fake_run(root, f"max_{seed}", seed, pool="max", **{"test/acc": m})
    other = [0.50, 0.57, 0.52, 0.49]
    for seed, a in zip((10, 11, 12, 13), other):
        fake_run(root, f"avg_{seed}", seed, pool="avg", **{"test/acc": a})
    rows = by_label(compare_json(compare, str(root)))
    check_variant(rows["model.pool=avg"], other)
    assert rows["model.pool=avg"]["test"] == "Welch t"
    assert rows["model.pool=avg"]["p"] == pytest.approx(welch_p(MAX, other), rel=1e-9)


def test_one_seed_asks_for_more_instead_of_a_verdict(compare, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    fake_run(root, "max", 0, pool="max", **{"test/acc": 0.6})
    fake_run(root, "avg", 0, pool="avg", **{"test/acc": 0.5})
    rows = by_label(compare_json(compare, str(root)))
    assert "needs more seeds" in rows["model.pool=max"]["verdict"]
    assert rows["model.pool=avg"]["verdict"] == "needs more seeds (n=1)"
    assert rows["model.pool=avg"]["p"] is None and rows["model.pool=avg"]["ci_low"] is None
    table = " ".join(compare(str(root), check=True).stdout.split())
    assert "n<2" in table and "needs more seeds" in table and "no test ran" in table


def test_lower_is_better_for_losses(compare, sweep: Path) -> None:
    report = compare_json(compare, str(sweep), "--metric", "test/loss")
    assert report["goal"] == "min"
    best = report["variants"][0]
    assert best["variant"] == "model.pool=max" and best["mean"] == pytest.approx(1 - np.mean(MAX))


def test_a_running_run_whose_process_is_gone_shows_as_killed(compare, sweep: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, process in [("gone", {"host": socket.gethostname(), "pid": dead.pid}),
                          ("alive", {"host": socket.gethostname(), "pid": os.getpid()}),
                          ("elsewhere", {"host": "another-host", "pid": dead.pid})]:
        run = fake_run(sweep, name, 7, status="running")
        metrics = json.loads((run / "metrics.json").read_text())
        write_json(run / "metrics.json", {**metrics, "process": process})
    statuses = {Path(u["dir"]).name: (u["status"], u["error"]) for u in compare_json(compare, str(sweep))["unfinished"]}
    assert statuses["gone"][0] == "killed" and f"pid {dead.pid}" in statuses["gone"][1]
    assert statuses["alive"][0] == "running" and statuses["elsewhere"][0] == "running"


def test_segmentation_runs_are_compared_on_miou_by_default(compare, tmp_path: Path) -> None:
    root = tmp_path / "seg"
    for seed in range(2):
        fake_run(root, f"max_{seed}", seed, pool="max", task="segmentation",
                 **{"test/acc": 0.9, "test/miou": 0.40 + seed / 100})
    report = compare_json(compare, str(root))
    assert report["metric"] == "test/miou" and report["variants"][0]["mean"] == pytest.approx(0.405)
    assert compare_json(compare, str(root), "--metric", "test/acc")["metric"] == "test/acc"
    table = compare(str(root), check=True).stdout
    assert "40.50%" in table, "miou is a fraction: shown in %"


def test_runs_of_two_tasks_are_never_ranked_together(compare, tmp_path: Path) -> None:
    for seed in range(2):
        fake_run(tmp_path / "seg", f"max_{seed}", seed, task="segmentation", **{"test/acc": 0.9, "test/miou": 0.4})
        fake_run(tmp_path / "cls", f"max_{seed}", seed, **{"test/acc": 0.5})
    for args in ([str(tmp_path)], [str(tmp_path / "seg"), str(tmp_path / "cls"), "--metric", "test/acc"],
                 [str(tmp_path), "--by", "model.pool", "--format", "json"]):
        proc = compare(*args)
        assert proc.exit_code == 2 and proc.stdout == "", proc.stdout
        error = " ".join(proc.stderr.split())
        assert error.startswith("error: paths: these runs mix tasks") and "Traceback" not in error
        assert "classification, segmentation" in error and "separately" in error
        assert f"segmentation: 2 runs under {tmp_path / 'seg'}" in error
    assert compare(str(tmp_path / "seg"), check=True).exit_code == 0  # one kind at a time is fine


def test_failed_running_and_broken_runs_are_shown_not_fatal(compare, sweep: Path) -> None:
    fake_run(sweep, "max_failed", 3, status="failed", pool="max")
    fake_run(sweep, "avg_running", 4, status="running", pool="avg")
    (sweep / "broken").mkdir()
    (sweep / "broken" / "metrics.json").write_text('{"status": "runn')  # cut short by hand
    (sweep / "no_metrics" / ".hydra").mkdir(parents=True)
    (sweep / "no_metrics" / ".hydra" / "config.yaml").write_text(
        "seed: 5\nmodel:\n  pool: avg\n  widths: [8, 16]\ntrainer:\n  epochs: 1\ndata:\n  subset: 200\n"
        "task:\n  name: classification\n")
    report = compare_json(compare, str(sweep))
    statuses = {Path(u["dir"]).name: u["status"] for u in report["unfinished"]}
    assert statuses == {"max_failed": "failed", "avg_running": "running", "broken": "unreadable",
                        "no_metrics": "no metrics"}
    rows = by_label(report)
    assert report["keys"] == ["model.pool"], "unfinished runs must not split variants"
    check_variant(rows["model.pool=max"], MAX)  # only completed runs count
    assert rows["model.pool=max"]["unfinished"] == {"failed": 1}
    assert rows["model.pool=avg"]["unfinished"] == {"no metrics": 1, "running": 1}
    table = " ".join(compare(str(sweep), check=True).stdout.split())
    assert "ValueError: boom" in table and "unreadable" in table and "1 failed" in table


def test_completed_runs_without_a_number_are_named_and_a_null_status_is_unknown(compare, sweep: Path) -> None:
    """main writes a NaN figure as null; older files may hold NaN itself or a string: each
    such completed run is left out of its variant, and the report says which and why."""
    for name, seed, pool, acc in [("max_null", 3, "max", None), ("max_nan", 4, "max", float("nan")),
                                  ("avg_text", 3, "avg", "n/a")]:
        run = fake_run(sweep, name, seed, pool=pool)
        metrics = json.loads((run / "metrics.json").read_text())
        write_json(run / "metrics.json", {**metrics, "test/acc": acc})
    fake_run(sweep, "avg_nostatus", 5, status=None, pool="avg", **{"test/acc": 0.5})
    report = compare_json(compare, str(sweep))
    rows = by_label(report)
    check_variant(rows["model.pool=max"], MAX)
    check_variant(rows["model.pool=avg"], AVG)
    left = {Path(r["dir"]).name: r["why"] for r in report["left_out"]}
    assert left == {"max_null": "null: NaN or infinite", "max_nan": "nan: not finite",
                    "avg_text": "'n/a': not a number"}
    assert {Path(u["dir"]).name: u["status"] for u in report["unfinished"]} == {"avg_nostatus": "unknown"}
    table = " ".join(compare(str(sweep), check=True).stdout.split())  # the notes wrap at the terminal's width
    assert table.count("left out:") == 1
    said = table[table.index("left out:"):]
    assert said.startswith("left out: 3 completed runs without a number for test/acc: ")
    assert all(f"{name} (" in said for name in ("max_null", "max_nan", "avg_text")), said
    assert "None" not in table and "unknown: " in table


def test_by_ignore_and_the_shared_header(compare, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    scores = {("max", 1): [0.5, 0.52], ("max", 2): [0.6, 0.58], ("avg", 1): [0.4, 0.45], ("avg", 2): [0.55, 0.5]}
    for (pool, epochs), values in scores.items():
        for seed, v in enumerate(values):
            fake_run(root, f"{pool}_{epochs}_{seed}", seed, pool=pool, epochs=epochs, **{"test/acc": v})
    both = compare_json(compare, str(root))
    assert both["keys"] == ["model.pool", "trainer.epochs"] and len(both["variants"]) == 4
    check_variant(by_label(both)["model.pool=avg, trainer.epochs=2"], scores[("avg", 2)])
    for args in (["--by", "model.pool"], ["--ignore", "trainer.epochs"]):
        pooled = compare_json(compare, str(root), *args)
        assert pooled["keys"] == ["model.pool"]
        check_variant(by_label(pooled)["model.pool=max"], scores[("max", 1)] + scores[("max", 2)])
        assert by_label(pooled)["model.pool=avg"]["test"] == "Welch t", "seeds repeat within a variant: not paired"
    header = " ".join(compare(str(root), "--by", "model.pool,trainer.epochs", check=True).stdout.split())
    assert "same in every run: data.subset=200 device=cpu precision=fp32" in header
    assert "┃ variant" in header and "model.pool=avg, trainer.epochs=2" in header, "no shared prefix"


def test_a_rerun_of_a_seed_counts_once_by_its_newest_run(compare, sweep: Path, tmp_path: Path) -> None:
    # The same sweep run again (other paths, hardware noise in the scores) gave n=6 per
    # variant with seeds [0,1,2,0,1,2]: a narrower interval and Welch's test.
    again = tmp_path / "again"
    newer = {"max": [m + 0.001 for m in MAX], "avg": [a - 0.001 for a in AVG]}
    for pool, scores in newer.items():
        for seed, score in enumerate(scores):
            fake_run(again, f"{pool}_{seed}", seed, pool=pool, finished_at="2031-01-01T00:00:00+00:00",
                     **{"test/acc": score})
    report = compare_json(compare, str(sweep), str(again))
    rows = by_label(report)
    for pool in ("max", "avg"):
        check_variant(rows[f"model.pool={pool}"], newer[pool])
        assert rows[f"model.pool={pool}"]["seeds"] == [0, 1, 2]
        assert rows[f"model.pool={pool}"]["runs"] == sorted(rows[f"model.pool={pool}"]["runs"])
        assert rows[f"model.pool={pool}"]["reruns"] == [str(sweep / f"{pool}_{seed}") for seed in range(3)]
    assert rows["model.pool=avg"]["test"] == "paired t"
    assert rows["model.pool=avg"]["p"] == pytest.approx(paired_p(newer["max"], newer["avg"]), rel=1e-9)
    table = " ".join(compare(str(sweep), str(again), check=True).stdout.split())
    assert "reruns set aside: 6 completed runs repeat the config and seed of a newer one" in table
    assert "reruns set aside" not in compare(str(sweep), check=True).stdout


def test_runs_of_different_configs_pooled_into_a_variant_are_no_reruns(compare, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for epochs in (1, 2):
        for seed in (0, 1):
            fake_run(root, f"{epochs}_{seed}", seed, epochs=epochs, **{"test/acc": 0.5 + epochs / 10 + seed / 100})
    (row,) = compare_json(compare, str(root), "--ignore", "trainer.epochs")["variants"]
    assert row["n"] == 4 and row["reruns"] == [] and row["seeds"] == [0, 1, 0, 1]
    # another thread count computes the same job: a rerun, once its split is ignored
    run = fake_run(root, "1_0_threads", 0, finished_at="2031-01-01T00:00:00+00:00", **{"test/acc": 0.3})
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["config"]["trainer"]["threads"] = 1
    write_json(run / "metrics.json", metrics)
    (row,) = compare_json(compare, str(root), "--ignore", "trainer.epochs", "--ignore", "trainer.threads")["variants"]
    assert row["n"] == 4 and row["reruns"] == [str(root / "1_0")] and 0.3 in row["scores"]


def test_markdown_csv_and_table(compare, sweep: Path) -> None:
    md = compare(str(sweep), "--format", "md", check=True).stdout
    assert md.startswith("# test/acc by variant, best first")
    assert "| **model.pool=max** (best) | 3 |" in md and "| paired t |" in md
    assert f"| {100 * np.mean(AVG):.2f}% ± " in md and "| step peak MB |" in md, "md is the wide table"
    rows = list(csv.DictReader(io.StringIO(compare(str(sweep), "--format", "csv", check=True).stdout)))
    assert [r["variant"] for r in rows] == ["model.pool=max", "model.pool=avg"]
    assert float(rows[1]["mean"]) == pytest.approx(np.mean(AVG))
    assert [float(r["memory/step_peak_mb"]) for r in rows] == [40.0, 30.0]  # the activation-memory cost column
    assert json.loads(rows[0]["seeds"]) == [0, 1, 2]
    table = compare(str(sweep), check=True).stdout
    assert "model.pool" in table and "★ max" in table and "95% CI" in table
    assert "step peak MB" in " ".join(table.split()), "named below the table: --wide shows it"


def test_list_valued_variants_keep_their_brackets_in_the_table(compare, tmp_path: Path) -> None:
    # rich read "[conv,pool,norm,act]" as a markup tag: a block_order sweep's table
    # showed every variant as "model.order=".
    root = tmp_path / "sweep"
    for order in ("conv,norm,act,pool", "conv,pool,norm,act"):
        for seed in (0, 1):
            run = fake_run(root, f"{order}_{seed}", seed, **{"test/acc": 0.5 + seed / 10})
            metrics = json.loads((run / "metrics.json").read_text())
            metrics["config"]["model"]["order"] = order.split(",")
            write_json(run / "metrics.json", metrics)
    table = compare(str(root), check=True).stdout
    assert "model.order" in table and "[conv,pool,norm,act]" in table and "[conv,norm,act,pool]" in table
    md = compare(str(root), "--format", "md", check=True).stdout
    assert "model.order=[conv,pool,norm,act]" in md and "model.order=[conv,norm,act,pool]" in md


@pytest.mark.parametrize("args, words", [
    (["nowhere"], ["nowhere: does not exist", "outputs/multirun/<time>"]),
    (["EMPTY"], ["holds no run directories", "sampler train -m"]),
    (["SWEEP", "--metric", "test/acx"], ["--metric: no completed run recorded 'test/acx'", "test/acc"]),
    (["SWEEP", "--by", "model.poool"], ["--by: no run has the key model.poool", "model.pool"]),
    (["SWEEP", "--format", "xml"], ["--format: unknown format 'xml'", "csv, json"]),
    (["SWEEP", "--alpha", "5"], ["--alpha: 5.0 must be between 0 and 1"]),
    (["SWEEP", "--effect", "-1"], ["--effect: -1.0 must be a positive number", "e.g. 0.5"]),
    (["SWEEP", "--effect", "0"], ["--effect: 0.0 must be a positive number"]),
    (["SWEEP", "--effect", "nan"], ["--effect: nan must be a positive number"]),
    (["SWEEP", "--effect", "inf"], ["--effect: inf must be a positive number"]),
])
def test_user_errors_are_one_paragraph_and_exit_2(compare, sweep: Path, tmp_path: Path, args, words) -> None:
    (tmp_path / "EMPTY").mkdir()
    args = [str(sweep) if a == "SWEEP" else a for a in args]
    proc = compare(*args)
    assert proc.exit_code == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    for word in words:
        assert word in " ".join(proc.stderr.split())


def test_plots_and_their_tensorboard_run(compare, sweep: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for seed in range(3):  # two epochs of history for one more variant
        fake_run(sweep, f"conv_{seed}", seed, pool="conv", epochs=2, **{"test/acc": 0.3 + 0.01 * seed})
    proc = compare(str(sweep), "--plot", check=True)
    names = ["compare_metric.png", "compare_curves.png", "compare_cost.png"]
    for name in names:
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(sweep / name) in proc.stderr
    events = EventAccumulator(str(sweep / "compare"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["compare/cost", "compare/curves", "compare/metric"]
    compare(str(sweep), "--plot", check=True)  # a second time replaces, never piles up
    assert len(list((sweep / "compare").glob("events.out.tfevents.*"))) == 1
    assert "compare" not in {Path(u["dir"]).name for u in compare_json(compare, str(sweep))["unfinished"]}


def stopped_sweep(root: Path, sweeper: str = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper") -> Path:
    """A sweep of 4 jobs (max, avg x seeds 0, 1) stopped by Ctrl-C while its first two ran:
    multirun.yaml as Hydra writes it, two interrupted jobs, two without a directory."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweep:\n    dir: ${sampler.sweep_dir:outputs/multirun,${resume},${hydra.overrides.task}}\n"
        "    subdir: ${sampler.job_dir:${hydra.job.override_dirname}}\n"
        f"  sweeper:\n    _target_: {sweeper}\n    max_batch_size: null\n    params: null\n"
        "  overrides:\n    hydra: [hydra/launcher=joblib, hydra.mode=MULTIRUN]\n"
        "    task:\n    - model.pool=max,avg\n    - seed=0,1\n    - data.subset=200\n    - trainer.progress=false\n"
        "  job:\n    config:\n      override_dirname:\n        kv_sep: '='\n        item_sep: ','\n"
        "        exclude_keys: [trainer.progress, resume]\n"
        "seed: 0\n")
    for seed in (0, 1):
        fake_run(root, f"data.subset=200,model.pool=max,seed={seed}", seed, status="interrupted", epochs=3)
    return root


def test_a_sweep_stopped_early_names_the_jobs_it_never_started(compare, tmp_path: Path) -> None:
    # Only "model.pool=max" and "one variant" were shown: nothing said that half the sweep was missing.
    sweep = stopped_sweep(tmp_path / "sweep")
    md = compare(str(sweep), "--format", "md", check=True).stdout
    resume = (f"sampler train -m hydra/launcher=joblib model.pool=max,avg seed=0,1 data.subset=200 "
              f"trainer.progress=false resume={sweep}")
    assert f"- 2 of 4 jobs of sweep {sweep} never started: model.pool=avg seed=0,1; resume with `{resume}`\n" in md
    assert "never started: model.pool=avg seed=0,1;" in " ".join(compare(str(sweep), check=True).stdout.split())
    (unstarted,) = compare_json(compare, str(sweep))["unstarted"]
    assert unstarted["planned"] == 4 and unstarted["resume"] == resume
    assert [job[:2] for job in unstarted["jobs"]] == [["model.pool=avg", "seed=0"], ["model.pool=avg", "seed=1"]]
    fake_run(sweep, "data.subset=200,model.pool=avg,seed=1", 1, pool="avg", status="interrupted")
    table = " ".join(compare(str(sweep), check=True).stdout.split())
    assert "1 of 4 jobs of sweep" in table and "never started: model.pool=avg seed=0;" in table
    assert "never started" not in compare(str(sweep / "data.subset=200,model.pool=max,seed=0"), check=True).stdout


@pytest.mark.parametrize("multirun", ["optuna", "unreadable"])
def test_a_sweep_that_cannot_be_expanded_says_nothing_of_unstarted_jobs(compare, tmp_path: Path, multirun) -> None:
    sweep = stopped_sweep(tmp_path / "sweep", sweeper="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    if multirun == "unreadable":
        (sweep / "multirun.yaml").write_text("hydra: [")
    assert "never started" not in compare(str(sweep), check=True).stdout
    assert compare_json(compare, str(sweep))["unstarted"] == []


def test_plots_of_a_sweep_without_a_completed_run_warn_nothing(compare, tmp_path: Path) -> None:
    import warnings

    sweep = stopped_sweep(tmp_path / "sweep")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of identical low and high xlims
        proc = compare(str(sweep), "--plot", check=True)
    assert "Warning" not in proc.stderr and (sweep / "compare_metric.png").is_file()


def test_pareto_front() -> None:
    assert pareto_front([(3, 0.9), (1, 0.5), (2, 0.4), (2, 0.7), (5, 0.8)], maximize=True) == [1, 3, 0]
    assert pareto_front([(3, 0.1), (1, 0.5), (2, 0.4)], maximize=False) == [1, 2, 0]


def test_history_band_is_mean_and_std_across_seeds(tmp_path: Path) -> None:
    from sampler.experiments.analysis.report import build_report
    from sampler.experiments.runs.read import find_runs

    accs = [0.3, 0.36, 0.33]
    for seed, acc in enumerate(accs):
        fake_run(tmp_path, f"run_{seed}", seed, epochs=2, **{"test/acc": acc})
    (variant,) = build_report(find_runs([tmp_path])).variants
    epochs, mean, std = history_band(variant, "val/acc")
    assert list(epochs) == [1, 2]
    last = [read_metrics(d)["history"][1]["val/acc"] for d in run_dirs(tmp_path)]
    assert mean[1] == pytest.approx(np.mean(last)) and std[1] == pytest.approx(np.std(last, ddof=1))


# ---------------------------------------------------------------- a real sweep

def test_real_sweep_table_matches_its_metrics_files(cli, compare, tmp_path: Path) -> None:
    proc = cli("train", "-m", "model.pool=max,avg", "seed=0,1", *TINY, check=True)
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    runs = [read_metrics(d) for d in run_dirs(sweep)]
    assert len(runs) == 4 and {m["status"] for m in runs} == {"completed"}
    scores = {pool: {m["seed"]: m["test/acc"] for m in runs if m["config"]["model"]["pool"] == pool}
              for pool in ("max", "avg")}
    report = compare_json(compare, str(sweep))
    rows = by_label(report)
    for pool in ("max", "avg"):
        check_variant(rows[f"model.pool={pool}"], list(scores[pool].values()))
    best, other = report["variants"]
    assert best["verdict"] == "best" and best["mean"] >= other["mean"]
    assert other["test"] == "paired t"
    b, o = (scores[r["variant"].split("=")[1]] for r in (best, other))
    if len({b[s] - o[s] for s in (0, 1)}) > 1:
        assert other["p"] == pytest.approx(paired_p([b[0], b[1]], [o[0], o[1]]), rel=1e-9)
    params = {m["config"]["model"]["pool"]: m["model/params"] for m in runs}
    assert rows["model.pool=max"]["model/params"] == params["max"]
    summary = (sweep / "summary.md").read_text()
    assert f"summary: {sweep.relative_to(tmp_path)}/summary.md" in proc.stderr
    assert "| **model.pool=" in summary and "paired t" in summary


# ---------------------------------------------------------------- statistics across many variants

def test_holm_matches_a_worked_example_and_bonferroni_bounds() -> None:
    from sampler.experiments.analysis.stats import holm

    # Holm (1979), as in every textbook: sorted p 0.01, 0.03, 0.04 over m=3 → 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    ps = [0.001, 0.2, 0.04, 0.5]
    adjusted = holm(ps)
    assert all(p <= a <= min(1.0, len(ps) * p) for p, a in zip(ps, adjusted))  # between raw and Bonferroni


def test_difference_ci_and_probability_better_against_scipy() -> None:
    from scipy import stats as sp

    from sampler.experiments.analysis.stats import difference_ci, probability_better

    a, b = [0.61, 0.59, 0.63, 0.60], [0.55, 0.56, 0.57, 0.58]
    diff, low, high = difference_ci(a, b, paired=True, alpha=0.05)
    ref = sp.ttest_rel(a, b).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b)) and (low, high) == pytest.approx((ref.low, ref.high))
    diff, low, high = difference_ci(a, b, paired=False, alpha=0.05)
    ref = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert probability_better(a, b, paired=True) == 1.0
    assert probability_better([1, 2], [1.5, 0], paired=False) == 0.75


def test_seeds_needed_matches_cohens_tables() -> None:
    from sampler.experiments.analysis.stats import seeds_needed

    # Cohen (1988): d = 0.5, alpha 0.05 two-sided, power 0.8 → 64 per group; paired d_z = 0.5 → 34.
    assert seeds_needed(1.0, 0.5, paired=False) == 64
    assert seeds_needed(1.0, 0.5, paired=True) == 34
    assert seeds_needed(1.0, 1.0, paired=False) == 17


def test_compare_corrects_for_many_variants_and_takes_a_baseline(tmp_path: Path) -> None:
    from sampler.experiments.analysis.report import build_report
    from sampler.experiments.runs.read import find_runs

    scores = {"max": [0.60, 0.62, 0.61], "avg": [0.58, 0.61, 0.59], "conv": [0.50, 0.55, 0.52],
              "none": [0.40, 0.42, 0.45]}
    for pool, values in scores.items():
        for seed, acc in enumerate(values):
            fake_run(tmp_path, f"{pool}_{seed}", seed, pool=pool, **{"test/acc": acc})
    report = build_report(find_runs([tmp_path]), effect=0.005)
    assert report.corrected == 3 and report.reference == "best"
    raw = {v.values["model.pool"]: v.p_raw for v in report.variants if v.p_raw is not None}
    from sampler.experiments.analysis.stats import holm

    expected = dict(zip(raw, holm(list(raw.values()))))
    for v in report.variants[1:]:
        assert v.p == pytest.approx(expected[v.values["model.pool"]]) and v.p >= v.p_raw
        assert v.diff < 0 and v.diff_ci[0] <= v.diff <= v.diff_ci[1]
    assert report.seeds_needed is not None and report.seeds_needed >= 2
    base = build_report(find_runs([tmp_path]), baseline="none")
    verdicts = {v.values["model.pool"]: v.verdict for v in base.variants}
    assert verdicts["none"] == "baseline" and verdicts["max"] in ("better", "not distinguishable")
    assert all(v.diff > 0 for v in base.variants if v.values["model.pool"] != "none")
    with pytest.raises(ConfigError, match="blurpool"):
        build_report(find_runs([tmp_path]), baseline="blurpool")
