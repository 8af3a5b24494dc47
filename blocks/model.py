"""`build_model`: a Conv→Norm→Act→Pool stack and a head from plain Python values.

Read like torchvision's `make_layers`: a list of stage widths becomes stages of
`convs_per_stage` conv units, the last unit of each stage holding the pool at the
place `order` gives it. Validation happens here, before any data is loaded.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .layers import ACTS, NORMS, POOLS, MaxPool2d
from .registry import ConfigError, Registry, call_with_accepted, is_int, is_number
from .whiten import PatchWhitening, whiten_args as check_whiten_args

PARTS = ("conv", "norm", "act", "pool")
HEADS: Registry = Registry("head")


class ConvUnit(nn.Sequential):
    """One conv with its norm, activation and (optionally) pool, in a given order.

    Children are named after their part (`conv`, `norm`, `act`, `pool`), so a
    printed model and per-layer tables read as the config does.
    """

    def __init__(self, parts: "OrderedDict[str, nn.Module]", out_channels: int):
        super().__init__(parts)
        self.out_channels = out_channels


class Encoder(nn.Sequential):
    """Stages of conv units; `stage_channels[i]` is the width after stage i.

    `unit_args` are the keyword arguments its units were built with (order,
    conv/norm/act/pool choices), so a decoder can build matching units.
    """

    def __init__(self, stages: Sequence[nn.Module], stage_channels: Sequence[int],
                 unit_args: dict[str, Any] | None = None):
        super().__init__(*stages)
        self.stage_channels = list(stage_channels)
        self.out_channels = self.stage_channels[-1]
        self.unit_args = dict(unit_args or {})

    def features(self, x: Tensor) -> list[Tensor]:
        """The output of every stage, shallow to deep (for decoders with skips)."""
        feats = []
        for stage in self:
            x = stage(x)
            feats.append(x)
        return feats

    def features_with_indices(self, x: Tensor) -> tuple[list[Tensor], list[PoolIndices | None]]:
        """`features(x)`, and for every stage its max-pool's indices (None without one),
        which `nn.MaxUnpool2d` needs to put values back where they came from (SegNet)."""
        feats: list[Tensor] = []
        pools: list[PoolIndices | None] = []
        for stage in self:
            pool = None
            for part in (m for m in stage.modules() if not list(m.children())):
                if isinstance(part, MaxPool2d):
                    size = x.shape[-2:]
                    x, indices = part(x, with_indices=True)
                    pool = PoolIndices(indices, size)
                else:
                    x = part(x)
            feats.append(x)
            pools.append(pool)
        return feats, pools


class PoolIndices(NamedTuple):
    """Where each max came from, and the size of the map it was taken over."""

    indices: Tensor
    input_size: torch.Size


class Classifier(nn.Module):
    def __init__(self, encoder: Encoder, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.out_channels = head.out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.encoder(x)
        x = self.head(x)
        return x


class Scale(nn.Module):
    """Multiplies its input by a constant (airbench's `Mul(1/9)` on the logits)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class LinearHead(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0, global_pool: str = "avg",
                 bias: bool = True, scale: float = 1.0):
        super().__init__(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1),
            flatten=nn.Flatten(),
            dropout=nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            fc=nn.Linear(in_channels, num_classes, bias=bias),
            scale=Scale(scale) if scale != 1 else nn.Identity(),
        ))
        self.out_channels = num_classes


@HEADS.register("linear", "global average (or max) pool → optional dropout → linear → optional scale")
def linear_head(in_channels: int, num_classes: int, dropout: float = 0.0, global_pool: str = "avg",
                bias: bool = True, scale: float = 1.0) -> nn.Module:
    """`global_pool`: avg (torchvision) or max over the whole map (airbench); `scale` multiplies
    the logits: below 1 it slows the head's learning by its square (airbench: 1/9)."""
    if not is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ConfigError("dropout", f"{dropout!r} is not a probability in [0, 1)")
    if global_pool not in ("avg", "max"):
        raise ConfigError("global_pool", f"{global_pool!r}; choose one of: avg, max")
    if not isinstance(bias, bool):
        raise ConfigError("bias", f"{bias!r} must be true or false")
    if not is_number(scale) or not scale > 0:
        raise ConfigError("scale", f"{scale!r} must be a number > 0 (1 = the logits as they are; airbench: 1/9)")
    return LinearHead(in_channels, num_classes, dropout, global_pool, bias, scale)


def _conv_out(size: int, kernel_size: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def check_order(order: Sequence[str]) -> list[str]:
    if not isinstance(order, (list, tuple)):
        raise ConfigError("order", f"{order!r} must be a list such as [conv,norm,act,pool]")
    order = [str(o) for o in order]
    if sorted(order) != sorted(PARTS):
        raise ConfigError("order", f"{order} must be a permutation of {list(PARTS)}, each part once "
                                   "(for example [conv,norm,act,pool] or [conv,pool,norm,act])")
    return order


def _conv_args(conv_args: dict[str, Any] | None) -> dict[str, Any]:
    args = {"kernel_size": 3, "stride": 1, "padding": "auto", "dilation": 1, "groups": 1, "bias": "auto"}
    unknown = set(conv_args or {}) - set(args)
    if unknown:
        raise ConfigError(f"conv_args.{sorted(unknown)[0]}",
                          f"not a conv argument; choose from: {', '.join(sorted(args))}")
    args.update(conv_args or {})
    if args["padding"] == "auto":  # keeps H and W at stride 1
        args["padding"] = args["dilation"] * (args["kernel_size"] - 1) // 2
    for key in ("kernel_size", "stride", "dilation", "groups"):
        if not isinstance(args[key], int) or args[key] < 1:
            raise ConfigError(f"conv_args.{key}", f"{args[key]!r} must be a positive integer")
    if args["bias"] not in ("auto", True, False):
        raise ConfigError("conv_args.bias", f"{args['bias']!r}; choose one of: auto, true, false")
    return args


def build_unit(in_channels: int, out_channels: int, order: Sequence[str], *, with_pool: bool,
               conv_args: dict[str, Any], norm: str, norm_args: dict[str, Any], act: str,
               act_args: dict[str, Any], pool: str, pool_args: dict[str, Any]) -> ConvUnit:
    """One unit. Parts before the conv see `in_channels`, parts after it `out_channels`."""
    steps = [p for p in order if with_pool or p != "pool"]
    # The conv's bias is redundant when a norm comes right after it (a pool in
    # between commutes with a per-channel constant), as in mmcv's ConvModule.
    after_conv = [p for p in steps[steps.index("conv") + 1:] if p != "pool"]
    norm_follows = norm != "none" and after_conv[:1] == ["norm"]
    bias = (not norm_follows) if conv_args["bias"] == "auto" else bool(conv_args["bias"])
    groups = conv_args["groups"]
    if in_channels % groups or out_channels % groups:
        raise ConfigError("conv_args.groups", f"{groups} groups do not divide the conv's "
                                              f"{in_channels} input and {out_channels} output channels")
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    channels = in_channels
    for part in steps:
        if part == "conv":
            module = nn.Conv2d(in_channels, out_channels, conv_args["kernel_size"], conv_args["stride"],
                               conv_args["padding"], conv_args["dilation"], groups, bias=bias)
            channels = out_channels
        elif part == "norm":
            module = call_with_accepted(NORMS.get(norm, "norm"), norm_args, channels)
        elif part == "act":
            module = call_with_accepted(ACTS.get(act, "act"), act_args, channels)
        else:
            module = call_with_accepted(POOLS.get(pool, "pool"), pool_args, channels)
        if module is not None:
            parts[part] = module
    return ConvUnit(parts, out_channels)


def _check_size(input_size: int | Sequence[int], widths: Sequence[int], convs_per_stage: int, pool_at: int,
                conv: dict[str, Any], pool: str, pool_args: dict[str, Any], stem: int) -> None:
    """Fail early, with the stage named, when the feature map would shrink to nothing.
    `input_size` is one side of a square or (height, width); the shorter side decides."""
    k, s, p = pool_args.get("kernel_size", 2), pool_args.get("stride", 2), pool_args.get("padding", 0)
    if pool != "none" and p * 2 > k:
        raise ConfigError("pool_args.padding", f"{p} is more than half the pool kernel_size {k}")
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    size = min(height, width)
    if stem:
        size = _conv_out(size, conv["kernel_size"], conv["stride"], conv["padding"], conv["dilation"])
    for stage in range(len(widths)):
        for unit in range(convs_per_stage):
            size = _conv_out(size, conv["kernel_size"], conv["stride"], conv["padding"], conv["dilation"])
            if unit == pool_at and pool != "none" and size >= 1:
                size = _conv_out(size, k, s, p)
        if size < 1:
            raise ConfigError(
                "widths", f"{len(widths)} stages are too many for a {height}x{width} input: "
                          f"the feature map is gone after stage {stage + 1}. Use fewer stages, "
                          "pool=none, or a larger input")


def build_encoder(*, widths: Sequence[int] = (32, 64, 128, 256), convs_per_stage: int = 1,
                  order: Sequence[str] = ("conv", "norm", "act", "pool"), pool_unit: str = "last",
                  stem_width: int = 0,
                  conv_args: dict[str, Any] | None = None, norm: str = "batch",
                  norm_args: dict[str, Any] | None = None, act: str = "relu",
                  act_args: dict[str, Any] | None = None, pool: str = "max",
                  pool_args: dict[str, Any] | None = None, in_channels: int = 3,
                  input_size: int | Sequence[int] = 32, whiten: bool = False,
                  whiten_args: dict[str, Any] | None = None) -> Encoder:
    """Stages of conv units. The pool sits in the stage's `last` unit (VGG) or its
    `first` (airbench: the stage's later convs run on the pooled, 4x smaller map).
    An optional stem (a unit without pool, `stem_width` channels) runs before the
    first stage, as in most fast CIFAR-10 nets. With `whiten`, a frozen patch-whitening
    conv and the activation come first of all (airbench; blocks/whiten.py)."""
    order = check_order(order)
    if not isinstance(widths, (list, tuple)):
        raise ConfigError("widths", f"{widths!r} must be a list of channel counts, one per stage, "
                          "e.g. [32,64,128,256] (a single stage is [32])")
    widths = list(widths)
    if not widths or not all(is_int(w) and w > 0 for w in widths):
        raise ConfigError("widths", f"{widths} must be a non-empty list of positive channel counts")
    if not isinstance(convs_per_stage, int) or convs_per_stage < 1:
        raise ConfigError("convs_per_stage", f"{convs_per_stage!r} must be an integer >= 1")
    if pool_unit not in ("first", "last"):
        raise ConfigError("pool_unit", f"{pool_unit!r}; choose one of: first, last")
    pool_at = 0 if pool_unit == "first" else convs_per_stage - 1
    if not isinstance(stem_width, int) or stem_width < 0:
        raise ConfigError("stem_width", f"{stem_width!r} must be 0 (no stem) or a channel count")
    for registry, name, key, args in ((NORMS, norm, "norm", norm_args), (ACTS, act, "act", act_args),
                                      (POOLS, pool, "pool", pool_args)):
        registry.get(name, key)  # a wrong name or argument fails here, before the sizes are checked
        registry.check_args(args, f"{key}_args", spec=name)
    conv = _conv_args(conv_args)
    unit = dict(conv_args=conv, norm=norm, norm_args=dict(norm_args or {}), act=act,
                act_args=dict(act_args or {}), pool=pool, pool_args=dict(pool_args or {}))
    if not isinstance(whiten, bool):
        raise ConfigError("whiten", f"{whiten!r} must be true or false")
    white_args = check_whiten_args(in_channels, whiten_args)  # checked even when off: a typo still fails
    white = white_args if whiten else None
    if white:  # a kernel_size conv without padding: the map loses kernel_size - 1 pixels
        shrink = white["kernel_size"] - 1
        input_size = (input_size - shrink if isinstance(input_size, int)
                      else [side - shrink for side in input_size])
    _check_size(input_size, widths, convs_per_stage, pool_at, conv, pool, unit["pool_args"], stem_width)

    stages: list[nn.Module] = []
    channels = in_channels
    if white:
        parts = OrderedDict(conv=PatchWhitening(channels, white["width"], white["kernel_size"], white["eps"],
                                                white["bias"]))
        activation = call_with_accepted(ACTS.get(act, "act"), unit["act_args"], white["width"])
        if activation is not None:
            parts["act"] = activation
        stages.append(nn.Sequential(ConvUnit(parts, white["width"])))
        channels = white["width"]
    if stem_width:
        stages.append(nn.Sequential(build_unit(channels, stem_width, order, with_pool=False, **unit)))
        channels = stem_width
    for width in widths:
        units = [build_unit(channels if i == 0 else width, width, order,
                            with_pool=(i == pool_at), **unit)
                 for i in range(convs_per_stage)]
        stages.append(nn.Sequential(*units))
        channels = width
    stage_channels = ([white["width"]] if white else []) + ([stem_width] if stem_width else []) + widths
    return Encoder(stages, stage_channels, dict(order=order, **unit))


def build_head(name: str, in_channels: int, num_classes: int, **head_args: Any) -> nn.Module:
    """A registered head; errors name keys relative to the head's section (`name`, `dropout`)."""
    return call_with_accepted(HEADS.get(name, "name"), head_args, in_channels, num_classes)


INITS = ("he", "torch")


def unit_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The conv of every conv unit, encoder and decoder, but not the patch-whitening conv
    (fitted to data): the convs `model.dirac` starts as the identity."""
    return [m.conv for m in model.modules() if isinstance(m, ConvUnit)
            and isinstance(getattr(m, "conv", None), nn.Conv2d) and not isinstance(m.conv, PatchWhitening)]


def _dirac(conv: nn.Conv2d) -> None:
    """airbench's identity init: the first in_channels filters (per group) pass their
    input channel straight through; the others keep their random init."""
    g = conv.groups
    w = conv.weight.data.view(g, conv.out_channels // g, *conv.weight.shape[1:])
    for group in w:
        nn.init.dirac_(group[:group.shape[1]])


def init_weights(model: nn.Module, act: Any = "relu", act_args: dict[str, Any] | None = None,
                 scale: float = 1.0, scheme: str = "he", dirac: bool = False) -> nn.Module:
    """torchvision's VGG/ResNet init (`he`): He-normal convs with the gain of the activation
    that follows them (mmcv's ConvModule does the same), unit norms, small linear weights;
    or PyTorch's own defaults (`torch`: uniform with 1/sqrt(3 fan_in) std, as airbench
    has it). `dirac` then starts each conv unit's first in_channels filters as the identity
    (airbench). `scale` multiplies every conv and linear weight last: away from 1, the
    signal grows or shrinks by about that factor per layer unless a norm rescales it (the
    claim that BatchNorm lowers the sensitivity to initialisation)."""
    nonlinearity = ACTS.meta(act, "init", "relu")
    slope = (act_args or {}).get("negative_slope", 0.01) if nonlinearity == "leaky_relu" else 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if scheme == "torch":
                m.reset_parameters()
            else:
                nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if scheme == "torch":
                m.reset_parameters()
            else:
                nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if dirac:
        for conv in unit_convs(model):
            _dirac(conv)
    if scale != 1:
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.data.mul_(scale)
    for m in model.modules():  # after the generic pass: upsamplers that start smooth (blocks.heads)
        if callable(getattr(m, "init_smooth", None)):
            m.init_smooth()
    return model
