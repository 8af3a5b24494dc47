"""`sampler inspect`: the model a config describes, layer by layer (shapes, parameters,
FLOPs, receptive field) and its activation memory, without reading any data."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from rich.console import Console
from rich.table import Table

from sampler.blocks.layers import sliding_window
from sampler.blocks.model import unit_convs
from sampler.blocks.whiten import FIT_IMAGES, PatchWhitening

from ..train.cost import activation_memory
from ..train.loop import TTA, tta_mode
from ..train.model import example_input, make_model
from ..train.optim import build_optimizer
from .config import check_override_keys, compose


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


INIT_NAMES = {"he": "He-normal, fan_out, the activation's gain, as torchvision",
              "torch": "PyTorch's defaults: uniform, 1/sqrt(3 fan_in) std, as airbench"}


def training_recipe(cfg: dict[str, Any], model: torch.nn.Module) -> list[str]:
    """What training does beyond the layers (airbench's ingredients among them): frozen
    weights, the torch lr and weight decay per parameter group, the schedule, lookahead
    averaging, the flip and test-time augmentation."""
    lines = []
    frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        owners = {name: model.get_submodule(name.rsplit(".", 1)[0]) for name, _ in frozen}
        whiten = [n for n, m in owners.items() if isinstance(m, PatchWhitening)]
        scales = [n for n in owners if n not in whiten]
        parts = [f"{n} (patch whitening, fitted to {FIT_IMAGES:,} training images when training starts)"
                 for n in whiten]
        parts += [f"{len(scales)} norm scales fixed at 1 (model.norm_args.freeze_scale)"] if scales else []
        lines.append(f"frozen: {sum(p.numel() for _, p in frozen):,} params: " + "; ".join(parts))
    init = cfg["model"].get("init", "he")
    lines.append(f"init: {init} ({INIT_NAMES[init]})"
                 + (f"; {len(unit_convs(model))} conv units start as the identity on their first in_channels "
                    "filters (model.dirac)" if cfg["model"].get("dirac") else ""))
    t, o, s = cfg["trainer"], cfg["optim"], cfg["sched"]
    groups = build_optimizer(model, **o, batch_size=t["batch_size"]).param_groups
    muon = [g for g in groups if g.get("muon")]
    shown = ", ".join(f"{g['lr']:.4g} (wd {g['weight_decay']:.3g})" for g in groups if g["params"] and not g.get("muon"))
    if muon:
        (g,) = muon
        lines.append(f"optim: muon on {len(g['params'])} conv filter banks: lr {g['lr']:.4g} per update, momentum "
                     f"{g['momentum']}{' (Nesterov)' if g['nesterov'] else ''}, {g['ns_steps']} Newton-Schulz steps "
                     f"in {g['ns_dtype']}" + (", each bank rescaled to norm sqrt(out) first" if g["normalize"] else ""))
        lines.append(f"optim: the rest Nesterov SGD, torch lr per group (weights, biases, norms): {shown} from "
                     "sgd_lr and weight_decay per 1024 images")
    else:
        units = " from lr and weight_decay per 1024 images (optim.decoupled)" if o.get("decoupled") else ""
        lines.append(f"optim: {o['name']}, torch lr per group (weights, biases, norms): {shown}{units}")
    lines.append("sched: " + ", ".join(f"{k}={v}" for k, v in s.items()) + " (a multiplier of the lr per step)")
    lines.append(f"lookahead: ema {t['ema']} per step, synced every {t['ema_every']} steps and at each epoch's end"
                 if t["ema"] else "lookahead: off (trainer.ema=0)")
    augment = cfg["data"].get("augment") or {}
    lines.append("augment: " + ", ".join(f"{k}={v}" for k, v in augment.items()))
    mode = tta_mode(t["tta"])
    lines.append(f"tta: {mode}: {TTA.describe(mode)}")
    return lines


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
    check_override_keys(overrides)  # a misspelt key, a preset's optimizer values handed to another
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
    for line in training_recipe(cfg, model):
        console.print(line, highlight=False)
