"""`sampler bench`: both pipelines timed, the arithmetic they stand for, and that as a share
of the machine's peak, measured in the same run."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sampler.blocks import build_model
from sampler.experiments.tools.bench import STEP_PARTS, describe_cpu, measure_peak, step_breakdown
from sampler.experiments.train.cost import count_flops
from sampler.experiments.train.env import resolve_precision


def _table(out: str) -> dict[str, dict[str, str]]:
    """The throughput table's rows by pipeline, each cell by its column's header."""
    header, rows = None, {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip())[1:-1]]
        if cells and cells[0] == "pipeline":
            header = cells
        elif header and cells and cells[0] in ("sampler", "tutorial"):
            rows[cells[0]] = dict(zip(header, cells))
    return rows


def _peaks(out: str) -> dict[str, float]:
    """The measured peaks by precision, from the `peak (...): bf16 X GFLOP/s (N iterations ...)` line."""
    flat = " ".join(out.split())  # rich may wrap the line anywhere
    return {p: float(v) for p, v in re.findall(r"(bf16|fp32) ([\d.]+) GFLOP/s \(\d+ iterations", flat)}


def test_bench_times_both_pipelines_and_the_arithmetic_they_stand_for(cli) -> None:
    proc = cli("bench", "--epochs", "1", "--subset", "200", "--widths", "8", "--widths", "16",
               "--batch-size", "50", "--peak-seconds", "0.1", check=True)
    out = proc.stdout
    assert "USDT" not in proc.stderr and "profiler_start" not in proc.stderr  # the profiler's C++ chatter
    rows = _table(out)
    assert set(rows) == {"sampler", "tutorial"}, out
    assert list(rows["sampler"]) == ["pipeline", "precision", "img/s", "GFLOP/s", "train s", "test acc",
                                     "max/first epoch", "% of peak", "speedup"]
    # The default --precision is auto, resolved as trainer.precision is; the tutorial's is fp32.
    assert rows["sampler"]["precision"] == resolve_precision("auto", torch.device("cpu"))
    assert rows["tutorial"]["precision"] == "fp32"
    peaks = _peaks(out)
    assert set(peaks) == {rows["sampler"]["precision"], "fp32"}, out
    train_flops = 3 * count_flops(build_model(widths=[8, 16]), torch.zeros(1, 3, 32, 32))
    for r in rows.values():
        img_s, gflop_s = float(r["img/s"]), float(r["GFLOP/s"])
        # a wrong FLOP factor (2x or 4x the forward instead of 3x) fails this
        assert gflop_s == pytest.approx(img_s * train_flops / 1e9, abs=0.05 + train_flops / 1e9)
        assert float(r["% of peak"].rstrip("%")) == pytest.approx(100 * gflop_s / peaks[r["precision"]], abs=1.0)
    speedup = float(rows["sampler"]["speedup"].rstrip("x"))
    # from the unrounded rates: the shown ones are rounded to whole img/s (a slow tutorial: 1%)
    assert speedup == pytest.approx(float(rows["sampler"]["img/s"]) / float(rows["tutorial"]["img/s"]), rel=0.01)
    assert "cpu: " in out and f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in out
    assert "where sampler's training step goes" in out and "While the convolutions run" in out, out


def test_peak_only_needs_no_data_and_measures_the_precision_asked_for(cli, tmp_path) -> None:
    out = cli("bench", "--peak-only", "--peak-seconds", "0.05", "--precision", "fp32", "--skip-tutorial",
              "--data-root", str(tmp_path / "nonexistent"), check=True).stdout
    assert set(_peaks(out)) == {"fp32"} and "pipeline" not in out, out
    assert " ".join(describe_cpu().split()) in " ".join(out.split())


def test_bench_refuses_a_peak_time_that_is_not_positive(cli) -> None:
    proc = cli("bench", "--peak-only", "--peak-seconds", "0")
    assert proc.returncode == 2 and "--peak-seconds" in proc.stderr


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--epochs", "-1"), ("--subset", "-5"),
                                         ("--subset", "15")])
def test_bench_refuses_epochs_and_subsets_it_cannot_train_before_reading_data(cli, tmp_path, flag, value) -> None:
    # A data root that is not there: had the check come after the data, the error would name it.
    proc = cli("bench", flag, value, "--data-root", str(tmp_path / "nonexistent"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{flag}: {value} must be" in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr and "peak (" not in proc.stdout


def test_bench_refuses_a_subset_larger_than_the_training_set_before_the_peak(cli) -> None:
    proc = cli("bench", "--subset", "7110", "--skip-tutorial", "--peak-seconds", "0.05")  # the generated set has 7,100
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--subset: 7110 is more than the 7100 training images" in " ".join(proc.stderr.split()), proc.stderr
    assert "peak (" not in proc.stdout


def test_the_peak_counts_forward_and_both_gradients_as_torch_does() -> None:
    # The table's factor is 3x the forward; the peak must count its conv the same way.
    batch, channels, size = 2, 8, 8
    peak = measure_peak("fp32", seconds=0.0, batch=batch, channels=channels, size=size)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    x = torch.randn(batch, channels, size, size, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        y = conv(x)
        y.backward(torch.ones_like(y))  # the input's gradient and the weight's
    assert peak["flops_per_iteration"] == counter.get_total_flops() == 3 * count_flops(conv, x.detach())
    assert peak["iterations"] >= 3 and peak["gflop_per_s"] > 0


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_the_step_breakdown_finds_each_op_family_where_the_model_has_it(norm: str) -> None:
    model = build_model(widths=[8, 16], norm=norm).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 3, 32, 32, generator=g).to(memory_format=torch.channels_last),
                torch.randint(0, 10, (16,), generator=g)) for _ in range(8)]
    flops = count_flops(model, batches[0][0][:1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b = step_breakdown(model, batches, "fp32", 0.01, flops, steps=4)
    parts = b["ms_per_step"]
    assert list(parts) == ["data", *(name for name, _ in STEP_PARTS), "other"]
    assert all(ms >= 0 for ms in parts.values())
    for family in ("convolution", "activation", "pooling", "optimizer"):
        assert parts[family] > 0, (family, parts)
    assert (parts["normalization"] > 0) == (norm == "batch"), parts
    assert b["images_per_step"] == 16
    assert b["convolution_gflop_per_s"] == pytest.approx(3 * flops * 16 / (parts["convolution"] / 1e3) / 1e9)
    # the model it was given is left as it was: the breakdown trains a copy
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _no_cpp_compiler() -> bool:
    from sampler.experiments.errors import ConfigError
    from sampler.experiments.train.env import check_cpp_compiler

    try:
        check_cpp_compiler("compile", "")
    except ConfigError:
        return True
    return False


@pytest.mark.skipif(_no_cpp_compiler(), reason="torch.compile on a CPU needs a C++ compiler (g++)")
def test_compile_warm_builds_the_training_graphs_and_puts_the_model_back() -> None:
    from torch._dynamo.utils import counters

    from sampler.experiments.tools.bench import compile_warm

    torch._dynamo.reset()
    model = build_model(widths=[8, 16]).to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    compiled = compile_warm(model, 4, "fp32")
    # the warm-up's steps changed the running statistics; they, the weights and the RNG are back
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and all(p.grad is None for p in model.parameters())
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    out = compiled(x)
    out.sum().backward()  # a training step of the timed loop's shape builds nothing new
    assert counters["stats"]["unique_graphs"] == graphs
    model.load_state_dict(before)
    assert torch.allclose(out, model(x), atol=1e-4)
