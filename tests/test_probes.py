"""The measurements behind the course notes' claims (experiments/train/probes.py):
shifted inputs and prediction consistency, BatchNorm's batch against running statistics
and its train/eval gap, and convergence speed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import read_metrics, run_dirs
from sampler.blocks import build_model
from sampler.experiments.train.probes import (BatchStatsProbe, batch_statistics, bn_mode_gap, random_shifts, rebatch,
                                              shift_images, shift_metrics)

def amp():
    return torch.autocast("cpu", enabled=False)


# ---------------------------------------------------------------- shifts

@pytest.mark.parametrize("channels_last", [False, True])
def test_a_shift_moves_every_pixel_and_fills_the_border_with_zeros(channels_last: bool) -> None:
    x = torch.arange(1, 2 * 3 * 5 * 6 + 1, dtype=torch.float32).reshape(2, 3, 5, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = shift_images(x, 2, -1)  # 2 px down, 1 px left
    assert torch.equal(out[:, :, 2:, :-1], x[:, :, :-2, 1:])
    assert (out[:, :, :2] == 0).all() and (out[:, :, :, -1] == 0).all()
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    per_image = shift_images(x, torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert torch.equal(per_image[0], shift_images(x[:1], 0, 1)[0])
    assert torch.equal(per_image[1], shift_images(x[1:], 1, 0)[0])
    assert torch.equal(shift_images(x, 0, 0), x)


def test_random_shifts_cover_every_offset_of_1_to_k_pixels_and_never_none() -> None:
    dy, dx = random_shifts(20000, 2, torch.Generator().manual_seed(0))
    offsets = set(zip(dy.tolist(), dx.tolist()))
    assert (0, 0) not in offsets
    assert offsets == {(a, b) for a in range(-2, 3) for b in range(-2, 3)} - {(0, 0)}


class Corner(nn.Module):
    """Predicts class 1 when the top-left pixel is lit, else class 0: no invariance at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lit = (x[:, 0, 0, 0] > 0).float()
        return torch.stack([1 - lit, lit], 1)


class Total(nn.Module):
    """Predicts from the image's total brightness: invariant to any shift that keeps it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lit = (x.sum((1, 2, 3)) > 0.5).float()
        return torch.stack([1 - lit, lit], 1)


def test_shift_metrics_tell_an_invariant_model_from_one_that_is_not() -> None:
    x = torch.zeros(40, 1, 8, 8)
    x[:20, :, 0, 0] = 1  # class 1: one lit pixel in the corner, class 0: dark
    y = torch.cat([torch.ones(20), torch.zeros(20)]).long()
    batches = [(x[:25], y[:25]), (x[25:], y[25:])]
    corner = shift_metrics(Corner(), batches, amp, max_px=2)
    # Any shift moves the lit pixel off (0, 0) or out of the image: class 1 is lost.
    assert corner["test/shift_acc_1px"] == pytest.approx(0.5)
    assert corner["test/shift_consistency"] == pytest.approx(0.5)
    x[:20, :, 0, 0], x[:20, :, 4, 4] = 0, 1  # the lit pixel in the middle: no shift of <= 2 px loses it
    total = shift_metrics(Total(), batches := [(x[:25], y[:25]), (x[25:], y[25:])], amp, max_px=2)
    assert total == {"test/shift_acc_1px": 1.0, "test/shift_acc_2px": 1.0, "test/shift_acc_mean": 1.0,
                     "test/shift_consistency": 1.0}


# ---------------------------------------------------------------- BatchNorm

def test_the_probe_keeps_the_batch_statistics_the_layer_normalised_with() -> None:
    bn = nn.BatchNorm2d(3, momentum=1.0)  # momentum 1: running stats = the last batch's
    model = nn.Sequential(bn)
    x = torch.randn(16, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0])[:, None, None] + 5
    with BatchStatsProbe(model, keep=1) as probe:
        model.train()
        model(x)
        model.eval()
        model(x)  # eval forwards are not batch statistics
    ((name, layer, mean, var),) = list(probe.layer_stats())
    assert name == "0" and layer is bn
    assert torch.allclose(mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(var, x.var((0, 2, 3)), atol=1e-4)
    scalars = probe.scalars()
    assert scalars["bn/0/mean_shift"] == pytest.approx(0, abs=1e-5)
    assert scalars["bn/0/var_ratio"] == pytest.approx(1, abs=1e-4)
    assert set(probe.histograms()) == {f"bn/0/{k}" for k in ("mean_running", "mean_batch", "var_running", "var_batch")}
    assert not bn._forward_pre_hooks  # removed on exit


def test_the_probe_sees_running_statistics_lag_behind_a_shifted_input() -> None:
    model = nn.Sequential(nn.BatchNorm2d(2, momentum=0.1))
    with BatchStatsProbe(model) as probe:
        model.train()
        model(torch.randn(32, 2, 4, 4) + 3)  # one step: running mean moved only 10% of the way
    assert probe.scalars()["bn/0/mean_shift"] > 2


def test_batch_statistics_restore_the_running_stats_and_leave_eval_mode() -> None:
    model = build_model(widths=[8, 16], norm="batch")
    model.train()
    model(torch.randn(8, 3, 32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with batch_statistics(model):
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(m.training for m in norms) and not model.training
        model(torch.randn(8, 3, 32, 32) * 5)
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_train_eval_gap_is_zero_without_running_stats_and_not_with_stale_ones() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    loss = nn.CrossEntropyLoss()
    untracked = build_model(widths=[8, 16], norm_args={"track_running_stats": False})
    gap = bn_mode_gap(untracked, batches, loss, amp, 16, "val")
    assert gap["bn/val_gap_acc"] == 0 and gap["bn/val_loss_eval_mode"] == pytest.approx(gap["bn/val_loss_train_mode"])
    stale = build_model(widths=[8, 16])  # running stats still at their init (mean 0, var 1)
    gap = bn_mode_gap(stale, [(x * 10 + 3, y)], loss, amp, 16, "test")
    assert gap["bn/test_loss_eval_mode"] != pytest.approx(gap["bn/test_loss_train_mode"])
    assert set(gap) == {"bn/test_acc_eval_mode", "bn/test_acc_train_mode", "bn/test_loss_eval_mode",
                        "bn/test_loss_train_mode", "bn/test_gap_acc"}


def test_rebatch_mixes_the_classes_and_drops_the_short_rest() -> None:
    x, y = torch.arange(10.0)[:, None], torch.tensor([0] * 5 + [1] * 5)  # stored class by class
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    out = list(rebatch(batches, 4))
    assert [len(b) for b, _ in out] == [4, 4]  # 10 images: two batches of 4, the rest of 2 left out
    for xb, yb in out:
        assert torch.equal(y[xb.flatten().long()], yb)  # images keep their labels
    assert any(len(set(yb.tolist())) == 2 for _, yb in out)  # a batch holds both classes
    again = list(rebatch(batches, 4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(out, again))  # a fixed permutation


# ---------------------------------------------------------------- end to end

TINY = ("data.subset=100", "data.val_size=50", "data.test_size=50", "trainer.epochs=2", "model.widths=[8,16]",
        "trainer.threads=1", "trainer.batch_size=16")


def test_shift_bn_and_convergence_figures_reach_metrics_tensorboard_and_compare(cli, tmp_path: Path) -> None:
    cli("train", *TINY, "task.shift_px=2", "trainer.bn_diagnostics=true", "task.converge_at=0.01", check=True)
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    for key in ("test/shift_acc_1px", "test/shift_acc_2px", "test/shift_acc_mean", "test/shift_consistency",
                "bn/test_acc_train_mode", "bn/test_acc_eval_mode", "val/acc_auc"):
        assert 0 <= m[key] <= 1, key
    assert m["bn/test_gap_acc"] == pytest.approx(m["bn/test_acc_eval_mode"] - m["bn/test_acc_train_mode"])
    assert m["bn/encoder.0.0.norm/mean_shift"] >= 0 and m["bn/encoder.1.0.norm/var_ratio"] > 0
    assert "test/shift_acc_3px" not in m
    assert m["val/epochs_to_1"] == 1  # converge_at 0.01: reached after the first epoch
    assert m["val/acc_auc"] == pytest.approx(sum(r["val/acc"] for r in m["history"]) / 2)
    assert m["deterministic"] is False and m["nondeterministic_ops"] == []
    assert {"bn/val_gap_acc", "bn/encoder.0.0.norm/mean_shift"} <= set(m["history"][1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"histograms": 0}).Reload()
    assert {"bn/encoder.0.0.norm/mean_running", "bn/encoder.1.0.norm/var_batch"} <= set(events.Tags()["histograms"])
    assert {"test/shift_consistency", "bn/test_gap_acc", "bn/val_gap_acc", "val/acc_auc",
            "val/epochs_to_1"} <= set(events.Tags()["scalars"])
    out = cli("compare", "outputs", "--metric", "test/shift_consistency", check=True).stdout
    assert "test/shift_consistency" in out


def test_never_reaching_the_level_records_null_and_probes_stay_off_by_default(cli, tmp_path: Path) -> None:
    cli("train", *TINY, "task.converge_at=1.0", check=True)
    m = read_metrics(run_dirs(tmp_path / "outputs")[0])
    assert m["val/epochs_to_100"] is None
    assert not any(k.startswith(("bn/", "test/shift")) for k in m)


@pytest.mark.parametrize("override,key", [
    ("task.shift_px=-1", "task.shift_px"), ("task.shift_px=9", "task.shift_px"),
    ("trainer.bn_diagnostics=maybe", "trainer.bn_diagnostics"),
    ("task.converge_at=60", "task.converge_at"),
])
def test_bad_probe_values_are_refused_before_training(cli, tmp_path: Path, override: str, key: str) -> None:
    proc = cli("train", *TINY, override)
    assert proc.returncode == 2 and key in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() or not run_dirs(tmp_path / "outputs")


def test_inspect_shows_each_batchnorms_momentum_eps_and_running_stats(cli) -> None:
    out = cli("inspect", "model.widths=[8,16]", "model.norm_args.momentum=0.5", check=True).stdout
    assert "momentum 0.5, eps 1e-05" in out and "running = 0.5 x running + 0.5 x batch" in out
    out = cli("inspect", "model.widths=[8,16]", "model.norm_args.track_running_stats=false", check=True).stdout
    assert "no running stats" in out
