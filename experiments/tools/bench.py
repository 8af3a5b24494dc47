"""`sampler bench`: sampler's in-memory pipeline against the standard tutorial one.

Both train the same stack from the same initial weights, with the same optimizer,
schedule, batch size, epochs and augmentation (random crop with 4 px padding,
horizontal flip); only the data path, the memory format and (on request) the
precision differ:

- tutorial: torchvision ImageFolder over the JPEG tree, per-image PIL
  transforms (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize), a
  DataLoader with worker processes, fp32, NCHW;
- sampler: the decoded uint8 tensors in memory, whole-batch crop/flip,
  channels_last, in `--precision` (default `auto`, as `trainer.precision`: bf16
  autocast on a CPU with AVX-512 BF16 or AMX, fp32 elsewhere), eager or, with
  `--compile`, through `torch.compile` (compiled and warmed up before the timing).

Throughput counts every training step including its data loading; evaluation
is outside the timed part and identical for both (sampler's tensor evaluator).
The table also gives the arithmetic rate the throughput stands for (3x the
forward FLOPs per image: the backward costs about twice the forward), and that
rate as a share of this machine's peak, measured in the same run by a
convolution like the stack's (`measure_peak`) in each pipeline's precision: a
speedup the arithmetic cannot reach is not a pipeline problem.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from sampler.blocks import build_model

from ..data import TensorLoader
from ..data.cifar10 import CIFAR10_CLASSES, load_cifar10
from ..data.splits import balanced_indices
from ..train.cost import count_flops
from ..train.env import (check_cpp_compiler, contention, cpu_bf16_features, resolve_precision, seed_everything,
                         setup_threads)
from ..errors import ConfigError
from ..train.loop import autocast, evaluate, train_epoch
from ..train.optim import build_optimizer, build_scheduler

LR_PER_64 = 0.05       # peak lr of the one-cycle schedule per 64 images of batch (linear scaling)
TUTORIAL_WORKERS = 2   # DataLoader worker processes, as in the PyTorch CIFAR-10 tutorial
# The peak microbenchmark: one 3x3 convolution like the stack's middle stages (64->128
# channels at 8x8 and 128->256 at 4x4 in the default stack), made a little larger so the
# CPU's arithmetic, not memory, bounds it; fixed, so peaks compare across --widths.
PEAK_BATCH, PEAK_CHANNELS, PEAK_SIZE = 64, 128, 16
PEAK_WARMUP = 2        # untimed iterations first (oneDNN builds its kernels on the first)


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (Linux: /proc/cpuinfo; a VM
    may show only "AMD EPYC"), else what `platform` says."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "unknown CPU"
    numbers = [f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields]
    return fields["model name"] + (f" ({', '.join(numbers)})" if numbers else "")


def describe_cpu() -> str:
    """One line: model, native bf16 or not, torch's CPU capability (the kernels ATen uses)."""
    features = cpu_bf16_features()
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
    return (f"cpu: {cpu_name()}; native bf16: {', '.join(features) if features else 'no (no avx512_bf16 or amx_bf16)'}; "
            f"torch {torch.__version__} CPU capability {capability}")


def measure_peak(precision: str, seconds: float = 1.0, batch: int = PEAK_BATCH, channels: int = PEAK_CHANNELS,
                 size: int = PEAK_SIZE) -> dict[str, Any]:
    """This machine's convolution rate in `precision`: a 3x3 conv, channels_last, forward
    and backward (input and weight gradients: 3x the forward FLOPs, the factor the table
    uses), `PEAK_WARMUP` untimed iterations, then timed ones until `seconds` have passed
    (at least 3)."""
    device = torch.device("cpu")
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last).requires_grad_()
    amp = autocast(device, precision)
    with amp():
        grad = torch.randn_like(conv(x))
    flops = 3 * 2 * batch * channels * channels * 9 * size * size

    def step() -> None:
        with amp():
            y = conv(x)
        torch.autograd.grad(y, (x, conv.weight), grad)

    for _ in range(PEAK_WARMUP):
        step()
    iterations, start = 0, time.perf_counter()
    while iterations < 3 or time.perf_counter() - start < seconds:
        step()
        iterations += 1
    elapsed = time.perf_counter() - start
    return {"gflop_per_s": iterations * flops / elapsed / 1e9, "flops_per_iteration": flops,
            "iterations": iterations, "seconds": elapsed,
            "shape": f"3x3 conv {channels}->{channels} ch at {size}x{size}, batch {batch}, channels_last, "
                     "forward+backward"}


def measure_peaks(precisions: Iterable[str], seconds: float, console: Console) -> dict[str, dict[str, Any]]:
    peaks = {p: measure_peak(p, seconds) for p in dict.fromkeys(precisions)}
    shape = next(iter(peaks.values()))["shape"]
    console.print(f"peak ({shape}): " + ", ".join(
        f"{p} {r['gflop_per_s']:.1f} GFLOP/s ({r['iterations']} iterations in {r['seconds']:.1f} s)"
        for p, r in peaks.items()))
    return peaks


def tutorial_batches(folder: Path, indices: Sequence[int], mean: Sequence[float], std: Sequence[float],
                     seed: int, batch_size: int) -> Iterable[Any]:
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    if tuple(dataset.classes) != CIFAR10_CLASSES:
        raise ConfigError("--data-root", f"{folder} does not hold the CIFAR-10 class folders")
    return DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=True, drop_last=True,
                      num_workers=TUTORIAL_WORKERS, persistent_workers=True,
                      generator=torch.Generator().manual_seed(seed))


def _train(name: str, model: nn.Module, batches: Iterable[Any], steps_per_epoch: int, epochs: int, lr: float,
           precision: str, evaluate_on: TensorLoader, console: Console) -> dict[str, Any]:
    optimizer = build_optimizer(model, "sgd", lr=lr)
    scheduler = build_scheduler(optimizer, epochs * steps_per_epoch, steps_per_epoch, "onecycle")
    loss_fn, amp = nn.CrossEntropyLoss(), autocast(torch.device("cpu"), precision)
    images, seconds, epoch_s = 0, 0.0, []
    for epoch in range(epochs):
        r = train_epoch(model, batches, optimizer, scheduler, loss_fn, amp)
        images, seconds = images + r["images"], seconds + r["seconds"]
        epoch_s.append(r["seconds"])
        console.print(f"  {name}: epoch {epoch + 1}/{epochs} {r['images'] / r['seconds']:.0f} img/s "
                      f"loss {r['loss']:.3f}")
    test = evaluate(model, evaluate_on, loss_fn, amp)
    return {"images_per_s": images / seconds, "test/acc": test["acc"], "seconds": seconds,
            "epoch_max_over_first": max(epoch_s) / epoch_s[0], "precision": precision}


# Op families of a training step, by ATen op name (the first that matches names the op).
STEP_PARTS = (
    ("convolution", re.compile(r"conv|linear|addmm|\bmm\b")),
    ("normalization", re.compile(r"norm")),
    ("activation", re.compile(r"relu|clamp|threshold|gelu|silu|sigmoid|tanh|elu|hardswish")),
    ("pooling", re.compile(r"pool")),
    ("optimizer", re.compile(r"Optimizer|foreach|_fused|lerp|addcmul|addcdiv")),
)
PROFILE_WARMUP = 3     # untimed steps before the profiled ones


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """The profiler's C++ side (Kineto) writes its stages to the process's stderr
    ("USDT: ... profiler_start", "gpuGetDeviceCount failed" on a machine without a GPU);
    none of it is for the user of bench, so file descriptor 2 points at /dev/null meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def compile_warm(model: nn.Module, batch_size: int, precision: str, steps: int = 2) -> nn.Module:
    """`torch.compile(model)`, with its training forward and backward graphs built by
    `steps` untimed steps on random images; the model's weights, running statistics and
    the global RNG are then put back, so the timed training starts where eager's does."""
    compiled = torch.compile(model)
    state, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    x = torch.randn(batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    model.train()
    for _ in range(steps):
        with autocast(torch.device("cpu"), precision)():
            loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.set_rng_state(rng)
    return compiled


def step_breakdown(model: nn.Module, loader: Iterable[Any], precision: str, lr: float, flops_per_image: int,
                   steps: int = 12) -> dict[str, Any]:
    """Where one training step of sampler's pipeline goes, for a copy of `model`: the time
    per step of drawing a batch (timed alone), and of each op family (`STEP_PARTS`,
    torch.profiler's self CPU time) in `steps` profiled steps; and the rate of the
    convolutions while they run, in GFLOP/s (3x the forward FLOPs, as the table). Ops
    outside the families (zeroing gradients, copies, the loss) are "other"."""
    from torch.profiler import ProfilerActivity, profile

    model = copy.deepcopy(model)

    def again() -> Iterator[Any]:  # a small subset has fewer batches than the profile needs
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ConfigError("--subset", "too few training images for one batch of --batch-size")

    draw = again()
    start = time.perf_counter()
    batches = [next(draw) for _ in range(PROFILE_WARMUP + steps)]
    data_ms = 1e3 * (time.perf_counter() - start) / len(batches)
    optimizer = build_optimizer(model, "sgd", lr=lr)
    scheduler = build_scheduler(optimizer, len(batches), len(batches), "constant")
    loss_fn, amp = nn.CrossEntropyLoss(), autocast(torch.device("cpu"), precision)
    train_epoch(model, batches[:PROFILE_WARMUP], optimizer, scheduler, loss_fn, amp)
    with _native_stderr_muted(), profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(model, batches[PROFILE_WARMUP:], optimizer, scheduler, loss_fn, amp)
    with _native_stderr_muted():
        events = prof.key_averages()
    parts = {"data": data_ms, **{name: 0.0 for name, _ in STEP_PARTS}, "other": 0.0}
    other: dict[str, float] = {}
    for event in events:
        name = next((n for n, pattern in STEP_PARTS if pattern.search(event.key)), "other")
        ms = event.self_cpu_time_total / 1e3 / steps
        parts[name] += ms
        if name == "other":
            other[event.key.removeprefix("aten::")] = ms
    images = len(batches[0][1])
    conv_s = parts["convolution"] / 1e3
    return {"ms_per_step": parts, "images_per_step": images,
            "other_ops": [k for k, _ in sorted(other.items(), key=lambda kv: -kv[1])[:3]],
            "convolution_gflop_per_s": 3 * flops_per_image * images / conv_s / 1e9 if conv_s else None}


def run_bench(epochs: int, subset: int | None, data_root: str | None, widths: Sequence[int], seed: int,
              skip_tutorial: bool = False, batch_size: int = 64, order: Sequence[str] = ("conv", "norm", "act", "pool"),
              precision: str = "auto", peak_only: bool = False, peak_seconds: float = 1.0,
              profile: bool = True, compile: bool = False) -> dict[str, dict[str, Any]]:
    """Both pipelines' figures by name, the measured peaks under "peak" (by precision), and
    with `profile` where sampler's step goes under "breakdown" (`step_breakdown`); with
    `peak_only`, the peaks alone (no data read, nothing trained). `compile` runs sampler's
    pipeline through `torch.compile` (`compile_warm`); the profile, whose op families a
    compiled graph's fused kernels do not fall into, is then left out."""
    root = Path(data_root or os.environ.get("SAMPLER_DATA") or "data").expanduser()
    console = Console(highlight=False)
    if not console.is_terminal:  # piped into a file: no reason to squeeze the table into 80 columns
        console.width = max(console.width, 120)
    if epochs < 1:
        raise ConfigError("--epochs", f"{epochs} must be a positive integer")
    if subset is not None and (subset < 10 or subset % 10):
        raise ConfigError("--subset", f"{subset} must be a multiple of the 10 classes, at least 10 (leave "
                          "--subset out to use every training image)")
    if batch_size < 1:
        raise ConfigError("--batch-size", f"{batch_size} must be a positive integer")
    if not peak_seconds > 0:
        raise ConfigError("--peak-seconds", f"{peak_seconds} must be a positive number of seconds")
    device = torch.device("cpu")
    seed_everything(seed)
    try:  # both checked before any data loads, and named by their flags
        precision = resolve_precision(precision, device)
        if compile:
            check_cpp_compiler("compile", "without --compile")
        initial = build_model(widths=list(widths), order=list(order))
    except ConfigError as e:
        raise ConfigError(f"--{e.key.split('.')[-1]}", e.message) from None
    threads = setup_threads(None)
    if warning := contention(threads, knob=None):  # a benchmark is the command whose figures this spoils most
        console.print(f"warning: {warning}", style="yellow")
    precisions = [precision] if skip_tutorial else [precision, "fp32"]  # the tutorial's is fp32
    if peak_only:
        console.print(f"bench --peak-only: {threads} threads")
        console.print(describe_cpu())
        return {"peak": measure_peaks(precisions, peak_seconds, console)}
    train_flops = 3 * count_flops(initial, torch.zeros(1, 3, 32, 32))
    lr = LR_PER_64 * batch_size / 64
    data = load_cifar10(str(root), subset=None, val_size=0)
    train_idx = torch.arange(len(data.train))
    if subset is not None:
        if subset > len(data.train):
            raise ConfigError("--subset", f"{subset} is more than the {len(data.train)} training images under "
                              f"{root}; ask for at most {len(data.train)}, or leave --subset out to use them all")
        train_idx, _ = balanced_indices(data.train.labels, subset // 10, torch.Generator().manual_seed(seed))
    test = TensorLoader(data.test, 500, data.mean, data.std, device, channels_last=True)
    console.print(f"bench: widths {list(widths)}, order {list(order)}, {len(train_idx)} training images, "
                  f"{epochs} epochs, batch {batch_size}, lr {lr:g}, {threads} threads, seed {seed}; "
                  f"{train_flops / 1e6:.1f} MFLOPs per training image")
    console.print(describe_cpu())
    peaks = measure_peaks(precisions, peak_seconds, console)
    results: dict[str, dict[str, Any]] = {}

    seed_everything(seed)
    ours = TensorLoader(data.train.take(train_idx), batch_size, data.mean, data.std, device, shuffle=True,
                        crop_padding=4, flip=True, drop_last=True, channels_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = copy.deepcopy(initial).to(memory_format=torch.channels_last)
    if compile:
        start = time.perf_counter()
        step_model = compile_warm(model, batch_size, precision)
        console.print(f"sampler: torch.compile and warm-up {time.perf_counter() - start:.1f} s (untimed)")
    results["sampler"] = _train("sampler", step_model if compile else model, ours, len(ours), epochs, lr,
                                precision, test, console)
    results["sampler"]["compiled"] = compile
    breakdown = step_breakdown(model, ours, precision, lr, train_flops // 3) if profile and not compile else None

    if not skip_tutorial:
        folder = root / "cifar10" / "train"
        if not folder.is_dir():
            raise ConfigError("--data-root", f"the tutorial pipeline needs the JPEG tree {folder}; point "
                              "--data-root at a folder holding cifar10/train/<class>/")
        seed_everything(seed)
        batches = tutorial_batches(folder, train_idx.tolist(), data.mean, data.std, seed, batch_size)
        test_nchw = TensorLoader(data.test, 500, data.mean, data.std, device)
        results["tutorial"] = _train("tutorial", copy.deepcopy(initial), batches, len(batches), epochs, lr,
                                     "fp32", test_nchw, console)
    for r in results.values():
        r["gflop_per_s"] = r["images_per_s"] * train_flops / 1e9
        r["peak_gflop_per_s"] = peaks[r["precision"]]["gflop_per_s"]
        r["percent_of_peak"] = 100 * r["gflop_per_s"] / r["peak_gflop_per_s"]
    _print(results, console)
    if breakdown is not None:
        _print_breakdown(breakdown, peaks[precision]["gflop_per_s"], console)
    return {**results, "peak": peaks, **({"breakdown": breakdown} if breakdown else {})}


def _print(results: dict[str, dict[str, Any]], console: Console) -> None:
    table = Table(title="training throughput (data loading included)")
    for col in ("pipeline", "precision", "img/s", "GFLOP/s", "train s", "test acc", "max/first epoch",
                "% of peak", "speedup"):
        table.add_column(col, justify="left" if col in ("pipeline", "precision") else "right")
    base = results.get("tutorial", {}).get("images_per_s")
    for name, r in results.items():
        table.add_row(name + (" (compiled)" if r.get("compiled") else ""), r["precision"], f"{r['images_per_s']:.0f}", f"{r['gflop_per_s']:.1f}", f"{r['seconds']:.1f}",
                      f"{100 * r['test/acc']:.2f}%", f"{r['epoch_max_over_first']:.2f}",
                      f"{r['percent_of_peak']:.0f}%", f"{r['images_per_s'] / base:.2f}x" if base else "")
    console.print(table)
    console.print("GFLOP/s: the model arithmetic the throughput stands for (3x the forward FLOPs per image); "
                  "% of peak: that over the peak measured above in the row's precision.")


def _print_breakdown(b: dict[str, Any], peak: float, console: Console) -> None:
    parts = b["ms_per_step"]
    total = sum(parts.values())
    table = Table(title=f"where sampler's training step goes (batch {b['images_per_step']}, torch.profiler)")
    for col in ("part", "ms/step", "share"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for name, ms in parts.items():
        label = f"other ({', '.join(b['other_ops'])}, ...)" if name == "other" and b["other_ops"] else name
        table.add_row(label, f"{ms:.2f}", f"{100 * ms / total:.0f}%")
    console.print(table)
    rate = b["convolution_gflop_per_s"]
    if rate:
        console.print(f"While the convolutions run they compute {rate:.1f} GFLOP/s, {100 * rate / peak:.0f}% of the "
                      "peak; the other parts move memory and do next to no arithmetic, so their share of the "
                      "step is what keeps the whole step below the peak.")
