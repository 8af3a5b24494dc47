"""`sampler inspect`: the model a config describes, layer by layer (shapes, parameters,
FLOPs, receptive field) and its activation memory, without reading any data."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from rich.console import Console
from rich.table import Table

from sampler.blocks.layers import sliding_window

from ..train.cost import activation_memory
from ..train.model import example_input, make_model
from .config import compose


def receptive_fields(rows: list[dict[str, Any]], prefix: str = "encoder.") -> None:
    """The theoretical receptive field (H, W) in input pixels of every `prefix` layer, in the
    order they ran: each window of k taps, d apart, widens it by (k - 1) * d times the
    stride of the map it reads, and strides multiply. Padding does not change it. Layers
    outside the chain (a segmentation head with its skips) get None."""
    field, jump = [1, 1], [1, 1]
    for row in rows:
        if not row["name"].startswith(prefix):
            row["rf"] = None
            continue
        if row["window"] is not None:
            kernel, stride, dilation = row["window"]
            for axis in (0, 1):
                field[axis] += (kernel[axis] - 1) * dilation[axis] * jump[axis]
                jump[axis] *= stride[axis]
        row["rf"] = tuple(field)


def layer_table(model: torch.nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per leaf module: output shape, own parameters, forward FLOPs for `x`, receptive field."""
    from torch.utils.flop_counter import FlopCounterMode

    rows: list[dict[str, Any]] = []
    hooks = []
    for name, module in model.named_modules():
        if not list(module.children()):
            def record(mod: torch.nn.Module, args: Any, out: Any, name: str = name) -> None:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else tuple(out[0].shape)
                rows.append({"name": name, "type": type(mod).__name__, "shape": shape,
                             "params": sum(p.numel() for p in mod.parameters()), "window": sliding_window(mod)})
            hooks.append(module.register_forward_hook(record))
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    for h in hooks:
        h.remove()
    flops = counter.get_flop_counts()
    prefix = type(model).__name__ + "."
    for row in rows:
        row["flops"] = sum(flops.get(prefix + row["name"], {}).values())
    receptive_fields(rows)
    return rows


def _show_rf(rf: tuple[int, int] | None) -> str:
    if rf is None:
        return ""
    return str(rf[0]) if rf[0] == rf[1] else f"{rf[0]}x{rf[1]}"


def norm_summary(model: torch.nn.Module) -> list[str]:
    """Each BatchNorm's momentum, eps and whether it tracks running statistics: what
    decides how its train and eval modes differ. Layers with the same settings share a line."""
    groups: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            if m.track_running_stats:
                update = ("a cumulative mean" if m.momentum is None else
                          f"running = {1 - m.momentum:g} x running + {m.momentum:g} x batch")
                mode = f"tracks running stats ({update}; eval mode normalises with them)"
            else:
                mode = "no running stats (eval mode uses each batch's statistics too)"
            key = f"momentum {m.momentum}, eps {m.eps:g}, {'affine' if m.affine else 'no gamma/beta'}, {mode}"
            groups.setdefault(key, []).append(name)
    return [f"BatchNorm ({len(names)} layer{'s' * (len(names) > 1)}: "
            f"{names[0] if len(names) == 1 else names[0] + ' ... ' + names[-1]}): {key}" for key, names in groups.items()]


def print_model_summary(overrides: Sequence[str]) -> None:
    cfg = compose(overrides)
    model, spec = make_model(cfg)
    rows = layer_table(model, example_input(spec))
    height, width = spec.height_width
    table = Table(title=f"{cfg['data']['name']} input 1x{spec.in_channels}x{height}x{width}")
    for col in ("layer", "type", "output shape", "params", "MFLOPs", "RF px"):
        table.add_column(col, justify="right" if col in ("params", "MFLOPs", "RF px") else "left")
    for r in rows:
        table.add_row(r["name"], r["type"], "x".join(map(str, r["shape"])), f"{r['params']:,}",
                      f"{r['flops'] / 1e6:.2f}" if r["flops"] else "", _show_rf(r["rf"]))
    total_params = sum(p.numel() for p in model.parameters())
    total_flops = sum(r["flops"] for r in rows)
    table.add_section()
    table.add_row("total", "", "", f"{total_params:,}", f"{total_flops / 1e6:.2f}")
    console = Console()
    console.print(table)
    encoder_rf = [r["rf"] for r in rows if r["rf"] is not None]
    if encoder_rf:
        console.print(f"receptive field of the encoder's output: {_show_rf(encoder_rf[-1])} px "
                      f"(theoretical; the input is {height}x{width})", highlight=False)
    for line in norm_summary(model):
        console.print(line, highlight=False)
    batch = cfg["trainer"]["batch_size"]
    memory = activation_memory(model, example_input(spec, batch), lambda out: out.float().mean())
    console.print(f"activation memory for a batch of {batch} (trainer.batch_size), fp32: "
                  f"{memory['saved'] / 2**20:.2f} MB saved for backward, "
                  f"{memory['train_peak'] / 2**20:.2f} MB at the training step's peak, "
                  f"{memory['inference_peak'] / 2**20:.2f} MB at the no_grad forward's peak", highlight=False)
