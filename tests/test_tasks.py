"""Each task declares its headline metric once; everything that ranks or optimises reads it."""
from __future__ import annotations

from pathlib import Path

import pytest

from sampler.experiments.analysis.report import default_metric, goal_of
from sampler.experiments.runs.read import Run
from sampler.experiments.train.tasks import TASKS, headline, hparam_metrics, objective


def run(task: str | None) -> Run:
    return Run(Path("x"), "completed", {}, {"task.name": task} if task else {"seed": 0})


@pytest.mark.parametrize("task,name", [("classification", "acc"), ("segmentation", "miou")])
def test_each_task_declares_its_headline(task: str, name: str) -> None:
    h = headline(task)
    assert (h.name, h.goal) == (name, "max")
    assert hparam_metrics(task)[:2] == (f"val/{name}_best", f"test/{name}")
    assert default_metric([run(task)]) == f"test/{name}"
    assert goal_of(f"val/{name}_best") == "max"


def test_hparam_metrics_keep_the_classification_columns_and_add_segmentation_ones() -> None:
    assert hparam_metrics("classification") == ("val/acc_best", "test/acc", "test/loss", "train/images_per_s",
                                                "time/total_s", "memory/step_peak_mb")
    assert {"test/boundary_f1", "test/pixel_acc"} <= set(hparam_metrics("segmentation"))
    assert hparam_metrics("no-such-task")[:2] == ("val/acc_best", "test/acc")  # the run records its own error


def test_mixed_or_unknown_tasks_fall_back_to_classification_for_the_default_metric() -> None:
    assert default_metric([run("segmentation"), run("classification")]) == "test/acc"
    assert default_metric([run(None)]) == "test/acc"
    assert goal_of("test/loss") == "min" and goal_of("time/total_s") == "min"


def test_the_sweeper_objective_is_the_headline_or_optimized_metric() -> None:
    seg = {"task": "segmentation", "val/miou_best": 0.41, "val/acc_best": 0.88, "test/miou": 0.4}
    assert objective(seg) == 0.41  # not pixel accuracy
    assert objective({"task": "classification", "val/acc_best": 0.7, "test/acc": 0.6}) == 0.7
    assert objective({"task": "classification", "test/acc": 0.6}) == 0.6  # no validation split
    assert objective(seg, "test/miou") == 0.4
    assert objective({"task": "segmentation", "status": "failed"}) is None
    assert set(TASKS.names()) == {"classification", "segmentation"}
