"""`sampler claims`: the computed claims, the verdicts read from sweeps (made up here, so
that each verdict can be forced), and the report it writes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sampler.experiments.tools import claims as C


def fake_run(root: Path, sweep: str, preset: str, seed: int, config: dict[str, Any], metrics: dict[str, Any],
             status: str = "completed") -> None:
    """One run directory as `sampler train -m experiment=<preset>` leaves it."""
    nested: dict[str, Any] = {"seed": seed, "data": {"name": "cifar10", "subset": 5000, "test_size": 2000},
                              "trainer": {"epochs": 3, "batch_size": 128}, "model": {"widths": [16, 32]}}
    for key, value in config.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    overrides = [f"{k}={v}" for k, v in config.items()] + [f"seed={seed}", f"experiment={preset}"]
    run_dir = root / sweep / ",".join(overrides[:-1])
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({
        "status": status, "seed": seed, "config": nested, "overrides": overrides, "deterministic": True,
        "precision": "bf16", "started_at": "2026-11-30T09:00:00+00:00", "git": {"commit": "abcdef0"},
        "hardware": {"cpu": "Test CPU", "cores": 2}, **metrics}))


def convergence_sweep(root: Path, auc: dict[str, list[float]], sweep: str = "2026-11-30_09-00-00") -> None:
    for norm, values in auc.items():
        for seed, value in enumerate(values):
            fake_run(root, sweep, "bn_convergence", seed, {"model.norm": norm, "task.converge_at": 0.6},
                     {"val/acc_auc": value, "val/epochs_to_60": 4 if norm == "batch" else None})


def row(root: Path, claim) -> C.Row:
    return claim(C.Context(C.find_sweeps(root), None))


def test_bn_convergence_holds_fails_or_is_undecided_as_the_seeds_say(tmp_path: Path) -> None:
    convergence_sweep(tmp_path / "a", {"batch": [0.60, 0.62, 0.61], "none": [0.50, 0.53, 0.51]})
    r = row(tmp_path / "a", C.claim_bn_convergence)
    assert r.verdict == "holds" and "+9.7 points" in r.measured
    assert "batch 3/3, none 0/3" in r.measured and r.deterministic.startswith("yes")
    convergence_sweep(tmp_path / "b", {"batch": [0.50, 0.52, 0.51], "none": [0.60, 0.63, 0.61]})
    assert row(tmp_path / "b", C.claim_bn_convergence).verdict == "fails"
    convergence_sweep(tmp_path / "c", {"batch": [0.60, 0.62], "none": [0.50, 0.53]})
    assert row(tmp_path / "c", C.claim_bn_convergence).verdict.startswith("undecided: too few seeds")
    convergence_sweep(tmp_path / "d", {"batch": [0.60, 0.50, 0.55], "none": [0.52, 0.58, 0.55]})
    verdict = row(tmp_path / "d", C.claim_bn_convergence).verdict
    assert verdict.startswith("undecided: no clear difference") and "n=3" in verdict


def test_the_newest_sweep_of_each_preset_is_read(tmp_path: Path) -> None:
    convergence_sweep(tmp_path, {"batch": [0.5, 0.5, 0.5], "none": [0.6, 0.6, 0.6]}, "2026-11-29_10-00-00")
    convergence_sweep(tmp_path, {"batch": [0.60, 0.62, 0.61], "none": [0.50, 0.53, 0.51]}, "2026-11-30_10-00-00")
    sweeps = C.find_sweeps(tmp_path)
    assert set(sweeps) == {"bn_convergence"} and all("2026-11-30" in str(r.dir) for r in sweeps["bn_convergence"])
    assert row(tmp_path, C.claim_bn_convergence).verdict == "holds"


def test_bn_lr_tolerance_reports_the_highest_lr_every_seed_survives(tmp_path: Path) -> None:
    for seed in range(3):
        for lr, (with_bn, without) in {0.1: (0.5, 0.4), 0.8: (0.45, None), 3.2: (0.1, None)}.items():
            fake_run(tmp_path, "s", "bn_lr_tolerance", seed, {"model.norm": "batch", "optim.lr": lr},
                     {"val/acc_best": with_bn})
            fake_run(tmp_path, "s", "bn_lr_tolerance", seed, {"model.norm": "none", "optim.lr": lr},
                     {"val/acc_best": without} if without else {}, "completed" if without else "diverged")
    r = row(tmp_path, C.claim_bn_lr)
    assert r.verdict == "holds"
    assert "batch 0.8, without 0.1" in r.measured
    assert any("lr 3.2: 0/3 converged, 3 diverged" in d for d in r.details)


def test_a_missing_sweep_names_the_command_that_makes_it(tmp_path: Path) -> None:
    r = row(tmp_path, C.claim_shift_invariance)
    assert r.verdict == "not measured" and r.commands == ["sampler train -m experiment=pool_shift_invariance"]


def test_shift_invariance_corrects_for_three_pools_and_says_which_help(tmp_path: Path) -> None:
    consistency = {"max": [0.80, 0.82, 0.81], "avg": [0.83, 0.84, 0.85], "conv": [0.70, 0.75, 0.65],
                   "none": [0.70, 0.71, 0.72]}
    for pool, values in consistency.items():
        for seed, value in enumerate(values):
            fake_run(tmp_path, "s", "pool_shift_invariance", seed, {"model.pool": pool},
                     {"test/shift_consistency": value, "test/acc": 0.5, "test/shift_acc_4px": 0.4})
    r = row(tmp_path, C.claim_shift_invariance)
    assert r.verdict.startswith("depends: on the pool") and "max, avg" in r.verdict and "not: conv" in r.verdict
    assert any("Holm p=" in d for d in r.details)
    assert "model.pool=max,avg,conv,none" not in r.commands[0]  # the preset's own axes need no repeating
    assert r.commands[0] == "sampler train -m experiment=pool_shift_invariance"


def test_the_computed_claims_hold_on_the_default_stack() -> None:
    ctx = C.Context({}, None)
    cost = C.claim_pool_cost(ctx)
    assert cost.verdict == "holds" and "25.0%" in cost.measured
    rf = C.claim_receptive_field(ctx)
    assert rf.verdict == "holds" and rf.measured.startswith("46 px with pools vs 9 px")
    relu = C.claim_relu_inplace(ctx)
    assert relu.verdict.startswith("depends: nothing in training")
    assert C.claim_max_sharp(ctx).verdict == "not measured"  # no data root


def test_interpolation_measures_tell_the_modes_apart() -> None:
    import torch

    x = torch.rand(4, 1, 16, 16)
    up = {m: C._upsample(x, m) for m in C.MODES}
    assert C._blockiness(up["nearest"], 4).min() > 0.99  # every change at a cell border
    assert C._blockiness(up["bilinear"], 4).max() < 0.5
    assert C._kinks(up["bilinear"], 4)[:, ].min() > 0.99  # piecewise linear: bends only at the samples
    assert C._kinks(up["bicubic"], 4).max() < 0.9


def test_sampler_claims_writes_the_report_from_generated_data(cli, tmp_path: Path, fake_data: Path) -> None:
    convergence_sweep(tmp_path / "outputs" / "multirun", {"batch": [0.60, 0.62, 0.61], "none": [0.50, 0.53, 0.51]})
    proc = cli("claims", "--data-root", str(fake_data), "--out", "report.md", check=True)
    text = (tmp_path / "report.md").read_text()
    assert text.count("\n## ") == len(C.CLAIMS) == 10
    assert "| 5 | BatchNorm speeds convergence | **holds** |" in text
    assert "sampler train -m experiment=bn_convergence" in text
    assert "Test CPU x2" in text  # the sweep's own hardware
    assert "not measured" in text  # the sweeps not made here
    assert "holds" in proc.stdout


def test_the_upsampling_row_names_each_part_and_reads_the_miou_sweep(tmp_path: Path) -> None:
    miou = {"bilinear": [0.50, 0.51, 0.52], "nearest": [0.40, 0.41, 0.42], "bicubic": [0.50, 0.515, 0.51]}
    for mode, values in miou.items():
        for seed, value in enumerate(values):
            fake_run(tmp_path, "s", "upsample_modes", seed, {"head.upsample": mode}, {"test/miou": value})
    r = row(tmp_path, C.claim_upsampling)
    assert r.verdict.startswith("not measured in part: nearest blocky not measured")  # no images here
    assert "bilinear the good default holds" in r.verdict  # better than nearest; bicubic not separable
    assert "better than nearest" in r.measured and "bicubic costlier" in r.verdict
    assert any(d.startswith("- bilinear − nearest: +10.00 points") for d in r.details)
    assert r.commands[0] == "sampler train -m experiment=upsample_modes head.upsample=bicubic,bilinear,nearest"


def test_shift_invariance_fails_when_pooling_is_less_consistent(tmp_path: Path) -> None:
    consistency = {"max": [0.70, 0.69, 0.71], "avg": [0.75, 0.74, 0.76], "conv": [0.60, 0.61, 0.59],
                   "none": [0.755, 0.745, 0.76]}
    for pool, values in consistency.items():
        for seed, value in enumerate(values):
            fake_run(tmp_path, "s", "pool_shift_invariance", seed, {"model.pool": pool},
                     {"test/shift_consistency": value, "test/acc": 0.5})
    verdict = row(tmp_path, C.claim_shift_invariance).verdict
    assert verdict.startswith("fails: no pool made the net more consistent") and verdict.endswith("max, conv")


def test_bn_modes_hold_when_the_outputs_differ_and_name_the_unclear_cells(tmp_path: Path) -> None:
    for seed in range(3):
        for batch, gap in ((2, [0.05, 0.06, 0.055][seed]), (8, [0.02, -0.01, 0.0][seed])):
            fake_run(tmp_path, "s", "bn_small_batch", seed,
                     {"trainer.batch_size": batch, "model.norm_args.momentum": 0.1},
                     {"bn/test_gap_acc": gap, "test/acc": 0.4, "bn/test_loss_eval_mode": 1.5,
                      "bn/test_loss_train_mode": 1.6})
    r = row(tmp_path, C.claim_bn_modes)
    assert r.verdict == "holds: the outputs differ in every run; the accuracy gap is not clear at batch 8, momentum 0.1"
    assert "test loss in 6/6 runs" in r.measured and "clear in 1 of 2" in r.measured
    assert any("batch varied" in d for d in r.details)  # the conditions do not pretend one batch size


def test_sampler_claims_refuses_a_sweeps_folder_that_does_not_exist(cli, tmp_path: Path) -> None:
    proc = cli("claims", "nonexistent", "--out", "report.md")  # a mistyped path
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert " ".join(proc.stderr.split()).startswith("error: nonexistent: does not exist;"), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "report.md").exists()
    # before any sweep (no outputs/multirun yet), the computed claims are still judged
    first = cli("claims", "--out", "report.md")
    assert first.returncode == 0 and (tmp_path / "report.md").exists(), first.stderr
