"""`sampler compare` fits a terminal (issue 11), never ranks two tasks or data sets
together (issue 10), draws readable cost axes, and `sampler data` counts classes
without void.

Tables are rendered at 80 and 100 columns, through formats.print_table on a rich
Console of that width and through the real CLI with COLUMNS (or none: a pipe gets 100).
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.cells import cell_len
from rich.console import Console
from test_compare import fake_run
from typer.testing import CliRunner

from sampler.cli.app import app
from sampler.experiments.analysis import formats
from sampler.experiments.analysis.plots import cost_figure, metric_figure
from sampler.experiments.analysis.report import build_report, is_fraction, short_labels
from sampler.experiments.errors import ConfigError
from sampler.experiments.runs.atomic import write_json
from sampler.experiments.runs.read import find_runs

LONG = "blurpool_learned_antialias"
SCORES = {"max": [0.5846, 0.5912, 0.5790], "avg": [0.5701, 0.5655, 0.5803], LONG: [0.5512, 0.5688, 0.5420]}
PARAMS = {"max": 370112, "avg": 370112, LONG: 375348}
COST_TITLES = ("params", "MFLOPs", "img/s", "time s", "step peak MB", "peak MB")


def with_config(run: Path, **config: object) -> Path:
    """Change a fake run's metrics.json: nested config keys (model={...}) and top-level numbers."""
    metrics = json.loads((run / "metrics.json").read_text())
    for key, value in config.items():
        if isinstance(value, dict):
            metrics["config"].setdefault(key, {}).update(value)
        else:
            metrics[key] = value
    write_json(run / "metrics.json", metrics)
    return run


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """A 3-variant pool sweep, 3 seeds each, one variant with a long name and more params."""
    root = tmp_path / "three"
    for pool, scores in SCORES.items():
        for seed, acc in enumerate(scores):
            run = fake_run(root, f"{pool}_{seed}", seed, pool=pool, **{"test/acc": acc, "test/loss": 1.5 - acc})
            with_config(run, **{"model/params": PARAMS[pool], "model/flops": 41.5e6 + 3e6 * (pool == LONG)})
    return root


@pytest.fixture
def edge(tmp_path: Path) -> Path:
    """Two seeds far apart near 100% and near 0%: the t-intervals reach past [0, 1]."""
    root = tmp_path / "edge"
    for pool, scores in {"max": [0.99, 0.90], "avg": [0.05, 0.40]}.items():
        for seed, acc in enumerate(scores):
            fake_run(root, f"{pool}_{seed}", seed, pool=pool, **{"test/acc": acc})
    return root


def render(root: Path, width: int, wide: bool = False, **kwargs) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, highlight=False, color_system=None)
    formats.print_table(build_report(find_runs([root]), **kwargs), wide=wide, console=console)
    return buffer.getvalue()


def check_bounds(text: str) -> None:
    """Every `mean% ± half` and clipped `mean% +up/−down†` stays within [0, 100]%."""
    cells = re.findall(r"(\d+\.\d+)% ± (\d+\.\d+)", text)
    clipped = re.findall(r"(\d+\.\d+)% \+(\d+\.\d+)/−(\d+\.\d+)†", text)
    assert cells or clipped
    for mean, half in cells:
        assert 0 <= float(mean) - float(half) and float(mean) + float(half) <= 100
    for mean, up, down in clipped:
        assert 0 <= float(mean) - float(down) + 1e-9 and float(mean) + float(up) <= 100 + 1e-9


def longest(text: str) -> int:
    return max(cell_len(line) for line in text.splitlines())


# ---------------------------------------------------------------- the terminal table

@pytest.mark.parametrize("width", [80, 100])
def test_the_table_fits_names_every_variant_in_full_and_shows_percent(three: Path, width: int) -> None:
    text = render(three, width)
    assert longest(text) <= width, text
    assert "model.pool" in text
    lines = text.splitlines()
    for pool in SCORES:  # the value in full, on one line, never cut with …
        assert any(re.search(rf"│ (★ )?{pool} ", line) for line in lines), text
    assert "…" not in text
    for pool, scores in SCORES.items():
        assert f"{100 * np.mean(scores):.2f}% ± " in text
    check_bounds(text)
    # Three variants, two tests against the best: Holm doubles the smaller p (0.0195 → 0.039).
    assert re.search(r"│ best +│", text) and "≈ p=0.24" in text and "worse p=0.039" in text
    assert "Holm-corrected over the 2 tests" in " ".join(text.split())
    assert "paired t" not in text.split("┘")[0], "the test is named below the table, not per row"
    assert "two-sided paired t-test" in " ".join(text.split())


def test_at_100_columns_the_two_telling_costs_fit_at_80_one(three: Path) -> None:
    header = {w: render(three, w).split("┡")[0] for w in (80, 100)}
    assert "params" in header[100] and "MFLOPs" in header[100]
    assert "params" in header[80] and "MFLOPs" not in header[80]
    for w in (80, 100):
        assert "img/s" not in header[w] and "peak MB" not in header[w], "same in every variant: tells nothing"
    assert "--wide: also std, min–max and" in render(three, 100)


@pytest.mark.parametrize("width", [80, 100])
def test_an_interval_past_the_metric_range_is_clipped_and_marked(edge: Path, width: int) -> None:
    text = render(edge, width)
    assert longest(text) <= width
    check_bounds(text)
    assert text.count("†") >= 3, "two clipped cells and the note"
    assert "clipped to [0, 100]%" in " ".join(text.split())
    for row in formats.rows(build_report(find_runs([edge]))):  # json keeps the raw t-interval
        assert row["ci_low"] < 0 or row["ci_high"] > 1


def test_wide_shows_every_cost_column_and_still_fits(three: Path) -> None:
    for width in (80, 100):
        text = render(three, width, wide=True)
        assert longest(text) <= width, text
        heads = text.split("┡")
        for title in (*COST_TITLES, "std", "min–max", "test"):  # a header may wrap between words
            assert any(all(w in h for w in title.split()) for h in heads), title
        assert LONG in text and "57.90–59.12%" in text and "370.1k" in text
    assert render(three, 80, wide=True).count("┏") == 3, "the spread and the costs below"
    assert render(three, 100, wide=True).count("┏") in (2, 3), "the costs (and the spread) below"
    assert render(three, 200, wide=True).count("┏") == 1, "one table where there is room"
    assert render(three, 200, wide=True).count("┏") == 1, "one table where it fits"
    header, _ = formats.table_cells(build_report(find_runs([three])), wide=True)
    assert set(COST_TITLES) < set(header)


def test_several_keys_share_their_prefix_in_the_header(tmp_path: Path) -> None:
    for pool in ("max", "avg"):
        for act in ("relu", "gelu"):
            for seed in range(2):
                run = fake_run(tmp_path, f"{pool}_{act}_{seed}", seed, pool=pool,
                               **{"test/acc": 0.5 + 0.02 * (pool == "max") + 0.01 * (act == "gelu") + seed / 1000})
                with_config(run, model={"act": act})
    report = build_report(find_runs([tmp_path]))
    assert short_labels(report.keys, report.variants)[0] == "model"
    for width in (80, 100):
        text = render(tmp_path, width)
        assert longest(text) <= width and "┃ model " in text
        for pool in ("max", "avg"):
            for act in ("relu", "gelu"):
                assert f"act={act}, pool={pool}" in text
    md = formats.to_markdown(report)
    assert "| **model.act=gelu, model.pool=max** (best) |" in md


def test_the_verdicts_are_short(tmp_path: Path) -> None:
    fake_run(tmp_path, "max", 0, pool="max", **{"test/acc": 0.6})
    fake_run(tmp_path, "avg", 0, pool="avg", **{"test/acc": 0.5})
    _, body = formats.table_cells(build_report(find_runs([tmp_path])))
    assert [row[3] for row in body] == ["best n<2", "n<2"]


@pytest.mark.parametrize("name, fraction", [("test/acc", True), ("val_best/acc", True), ("test/miou", True),
                                            ("test/pixel_acc", True), ("test/boundary_f1", True),
                                            ("test/iou/road", True), ("test/loss", False),
                                            ("time/total_s", False), ("model/params", False)])
def test_fractions_are_known_by_name(name: str, fraction: bool) -> None:
    assert is_fraction(name) is fraction


def test_a_loss_is_plain_and_its_interval_stops_at_zero(three: Path, tmp_path: Path) -> None:
    text = render(three, 100, metric="test/loss")
    assert "%" not in text.split("┡")[1].split("┘")[0] and "0.9151 ± 0.01517" in text
    for seed, loss in enumerate([0.01, 0.3]):
        fake_run(tmp_path / "low", f"max_{seed}", seed, **{"test/acc": 0.5, "test/loss": loss})
    text = render(tmp_path / "low", 80, metric="test/loss")
    mean, up, down = re.search(r"(\d+\.\d+) \+(\d+\.?\d*)/−(\d+\.\d+)†", text).groups()
    assert float(mean) == pytest.approx(0.155) and float(down) == pytest.approx(0.155)
    assert "clipped to [0, ∞)" in " ".join(text.split())


# ---------------------------------------------------------------- the real CLI

@pytest.mark.parametrize("columns", ["80", "100", None])
def test_the_cli_table_fits_columns_and_a_pipe_gets_100(three: Path, columns: str | None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    env = {"COLUMNS": columns} if columns else {}
    result = CliRunner().invoke(app, ["compare", str(three)], env=env)
    assert result.exit_code == 0, result.stderr
    width = int(columns or 100)
    assert longest(result.stdout) <= width, result.stdout
    assert longest(result.stdout) > 80 or width == 80, "not squeezed into rich's default 80"
    assert all(pool in result.stdout for pool in SCORES) and "%" in result.stdout
    check_bounds(result.stdout)


def test_json_and_csv_keep_raw_fractions_and_every_seed(three: Path) -> None:
    rows = {r["variant"]: r for r in formats.rows(build_report(find_runs([three])))}
    for pool, scores in SCORES.items():
        row = rows[f"model.pool={pool}"]
        assert row["seeds"] == [0, 1, 2] and row["scores"] == scores
        assert row["mean"] == pytest.approx(np.mean(scores))
    assert "0.5846" in formats.to_csv(build_report(find_runs([three])))


# ---------------------------------------------------------------- tasks and data sets apart

def test_mixed_data_sets_are_refused_and_the_summary_says_why(tmp_path: Path) -> None:
    from sampler.experiments.analysis.summary import write_summary

    for name in ("cifar10", "pets"):
        for seed in range(2):
            with_config(fake_run(tmp_path / name, f"max_{seed}", seed, **{"test/acc": 0.5}), data={"name": name})
    runs = find_runs([tmp_path])
    with pytest.raises(ConfigError) as error:
        build_report(runs)
    assert error.value.key == "paths"
    assert "mix data sets (data.name = cifar10, pets)" in error.value.message
    assert "separately" in error.value.message
    summary = write_summary(tmp_path, runs).read_text()
    assert "No comparison: paths: these runs mix data sets" in summary
    assert build_report(find_runs([tmp_path / "pets"])).variants[0].n == 2


# ---------------------------------------------------------------- figures

def test_cost_axes_read_370k_and_labels_stay_inside(three: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    report = build_report(find_runs([three]))
    fig = cost_figure(report)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    params = fig.axes[0]
    assert params.get_xlabel().startswith("params")
    ticks = [t.get_text() for t in params.get_xticklabels() if t.get_text()]
    assert 2 <= len(ticks) <= 7 and all(t.endswith("k") and len(t) <= 6 for t in ticks), ticks
    assert all(t.get_text().endswith("%") for t in params.get_yticklabels() if t.get_text())
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        names = [t for t in ax.texts if t.get_text()]
        assert sorted(t.get_text() for t in names) == sorted(SCORES), "each variant named by its value"
        for text in names:
            inside = text.get_window_extent(renderer)
            assert box.x0 - 1 <= inside.x0 and inside.x1 <= box.x1 + 1, text.get_text()
            assert box.y0 - 1 <= inside.y0 and inside.y1 <= box.y1 + 1, text.get_text()
    assert "model.pool" in fig.get_suptitle()


def test_the_metric_figure_clips_intervals_to_the_range(edge: Path) -> None:
    fig = metric_figure(build_report(find_runs([edge])))
    (ax,) = fig.axes
    for line in ax.lines:  # the error bars' caps
        assert all(-1e-9 <= y <= 1 + 1e-9 for y in line.get_ydata())
    assert ax.get_xlabel() == "model.pool"


# ---------------------------------------------------------------- sampler data

def test_class_count_leaves_void_apart(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from sampler.experiments.data import VOID, Dataset, Split
    from sampler.experiments.tools import listing

    masks = torch.arange(12).reshape(1, 3, 4) % 11
    masks[0, 0, 0] = VOID
    assert listing.class_count(masks) == "11 classes + void"
    assert listing.class_count(torch.tensor([0, 3, 9, 3])) == "3 classes"

    split = Split(torch.zeros(1, 3, 3, 4, dtype=torch.uint8), masks)
    data = Dataset("camvid", split, None, split, tuple(f"c{i}" for i in range(11)), (0.5,) * 3, (0.2,) * 3, "here")

    class Fake:
        @staticmethod
        def load(name: str) -> Dataset:
            return data

    monkeypatch.setattr(listing, "compose", lambda overrides: {"data": {"name": "camvid"}})
    monkeypatch.setattr(listing.DATASETS, "get", lambda name, key: Fake)
    listing.print_data_summary([])
    out = capsys.readouterr().out
    assert "11 classes + void" in out and "12 classes" not in out
