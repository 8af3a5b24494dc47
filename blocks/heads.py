"""Dense heads: per-pixel class scores at the input's size, from an `Encoder`'s stages.

Two styles (`HEAD_STYLES`, config key `head.style`):

- `oneshot`: a 1x1 classifier on the bottleneck, then one upsampling by the
  encoder's whole stride straight to the input size (FCN-32s);
- `progressive`: one upsampling per downsampling stage, deep to shallow, each
  followed by a conv unit built like the encoder's (SegNet's decoder). With
  `skips`, the encoder's feature map of the same size is *concatenated* before
  that unit (U-Net style, not FCN-8s's sum of score maps).

Six ways to upsample (`UPSAMPLERS`, config key `head.upsample`): `nearest`,
`bilinear` and `bicubic` through `F.interpolate`; `transposed` (ConvTranspose2d),
`pixel_shuffle` (sub-pixel conv) and `unpool` (MaxUnpool2d with the encoder's
max-pooling indices, SegNet). Every upsampler is handed the exact size it must
reach (the skip's or the input's), never only a factor, so odd sizes round-trip:
45 → 22 (floor pooling) → 45.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import MaxPool2d, sliding_window
from .model import HEADS, Classifier, Encoder, PoolIndices, build_unit
from .registry import ConfigError, Registry, call_with_accepted
from .whiten import PatchWhitening

UPSAMPLERS: Registry = Registry("upsample mode")
HEAD_STYLES: Registry = Registry("head style")
INTERPOLATING = ("bilinear", "bicubic")  # the modes F.interpolate takes align_corners for

Size = Sequence[int]


# ---------------------------------------------------------------- upsamplers
# Each is `forward(x, size, pool)`: x upsampled to `size` (height, width);
# `pool` is the matching encoder stage's PoolIndices (only unpool reads it).

class Interpolate(nn.Module):
    def __init__(self, channels: int, mode: str, align_corners: bool | None):
        super().__init__()
        self.mode, self.align_corners = mode, align_corners
        self.out_channels = channels

    def forward(self, x: Tensor, size: Size, pool: PoolIndices | None = None) -> Tensor:
        return F.interpolate(x, size=tuple(size), mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, align_corners={self.align_corners}"


def _cover(x: Tensor, size: Size, factor: int) -> Tensor:
    """Replicate the last row/column until `factor` times the map covers `size`:
    floor-mode pooling dropped them, so the crop after upsampling lands exactly."""
    pad_h = max(0, -(-size[0] // factor) - x.shape[-2])
    pad_w = max(0, -(-size[1] // factor) - x.shape[-1])
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def bilinear_kernel(kernel_size: int) -> Tensor:
    """FCN's bilinear upsampling filter (`upsample_filt`), kernel_size x kernel_size."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    return taps[:, None] * taps[None, :]


class Transposed(nn.Module):
    """ConvTranspose2d with stride `factor`, kernel 2f - f%2 and padding f//2, so that
    it maps n to exactly f*n and can start as bilinear interpolation (FCN)."""

    def __init__(self, channels: int, factor: int, smooth_init: bool):
        super().__init__()
        self.factor, self.smooth_init = factor, smooth_init
        self.up = nn.ConvTranspose2d(channels, channels, 2 * factor - factor % 2, factor, factor // 2)
        self.out_channels = channels

    def forward(self, x: Tensor, size: Size, pool: PoolIndices | None = None) -> Tensor:
        return self.up(_cover(x, size, self.factor))[..., :size[0], :size[1]]

    @torch.no_grad()
    def init_smooth(self) -> None:
        """Each channel bilinearly upsampled into itself: training starts from interpolation."""
        if self.smooth_init:
            w = self.up.weight
            w.zero_()
            w[range(w.shape[0]), range(w.shape[1])] = bilinear_kernel(w.shape[-1])
            nn.init.zeros_(self.up.bias)


class PixelShuffle(nn.Module):
    """Sub-pixel conv (ESPCN): a 3x3 conv to channels*f^2, then nn.PixelShuffle(f)."""

    def __init__(self, channels: int, factor: int, smooth_init: bool):
        super().__init__()
        self.factor, self.smooth_init = factor, smooth_init
        self.conv = nn.Conv2d(channels, channels * factor ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        self.out_channels = channels

    def forward(self, x: Tensor, size: Size, pool: PoolIndices | None = None) -> Tensor:
        return self.shuffle(self.conv(_cover(x, size, self.factor)))[..., :size[0], :size[1]]

    @torch.no_grad()
    def init_smooth(self) -> None:
        """ICNR (Aitken et al. 2017): all f^2 sub-pixels of a channel start with the same
        kernel, i.e. as a conv followed by nearest upsampling: no checkerboard at step 0."""
        if self.smooth_init:
            f2, w = self.factor ** 2, self.conv.weight
            base = torch.empty(w.shape[0] // f2, *w.shape[1:])
            nn.init.kaiming_normal_(base, mode="fan_out", nonlinearity="relu")
            w.copy_(base.repeat_interleave(f2, dim=0))
            nn.init.zeros_(self.conv.bias)


class Unpool(nn.Module):
    """nn.MaxUnpool2d with the encoder stage's indices: every value goes back to the
    position its max came from, zeros elsewhere (SegNet)."""

    def __init__(self, channels: int, kernel_size: Any, stride: Any, padding: Any):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size, stride, padding)
        self.out_channels = channels

    def forward(self, x: Tensor, size: Size, pool: PoolIndices | None = None) -> Tensor:
        assert pool is not None, "unpool runs only on stages with a max pool (checked when built)"
        return self.unpool(x, pool.indices, output_size=pool.input_size)


@UPSAMPLERS.register("nearest", "F.interpolate(mode='nearest'): copy the nearest value")
def nearest(channels: int, factor: int) -> nn.Module:
    return Interpolate(channels, "nearest", None)


@UPSAMPLERS.register("bilinear", "F.interpolate(mode='bilinear'); head.align_corners applies")
def bilinear(channels: int, factor: int, align_corners: bool | None = None) -> nn.Module:
    return Interpolate(channels, "bilinear", bool(align_corners))


@UPSAMPLERS.register("bicubic", "F.interpolate(mode='bicubic'); head.align_corners applies")
def bicubic(channels: int, factor: int, align_corners: bool | None = None) -> nn.Module:
    return Interpolate(channels, "bicubic", bool(align_corners))


@UPSAMPLERS.register("transposed", "ConvTranspose2d, bilinear-initialised with head.smooth_init")
def transposed(channels: int, factor: int, smooth_init: bool = True) -> nn.Module:
    return Transposed(channels, factor, smooth_init)


@UPSAMPLERS.register("pixel_shuffle", "3x3 conv to C*f^2 channels + PixelShuffle (ICNR init with head.smooth_init)")
def pixel_shuffle(channels: int, factor: int, smooth_init: bool = True) -> nn.Module:
    return PixelShuffle(channels, factor, smooth_init)


@UPSAMPLERS.register("unpool", "MaxUnpool2d with the encoder's max-pool indices (SegNet); needs model.pool=max")
def unpool(channels: int, factor: int, stage: nn.Module | None = None) -> nn.Module:
    # The class Encoder.features_with_indices takes indices from, so both find the same pool.
    pool = next(m for m in stage.modules() if isinstance(m, MaxPool2d))  # type: ignore[union-attr]
    return Unpool(channels, pool.kernel_size, pool.stride, pool.padding)


# ---------------------------------------------------------------- geometry checks

def _side(value: Any) -> int:
    return value if isinstance(value, int) else value[0]


def stage_factor(stage: nn.Module) -> int:
    """How many times a stage shrinks its input: the product of its strides."""
    return math.prod(window[1][0] for window in map(sliding_window, stage.modules()) if window is not None)


def _check_encoder(encoder: Encoder, upsample: str) -> None:
    """Dense heads need size-keeping convs; unpool also needs every stage to shrink
    only in a max pool that sees the conv's output."""
    if any(isinstance(m, PatchWhitening) for m in encoder.modules()):
        raise ConfigError("name", "model.whiten's unpadded conv shrinks the map by kernel_size-1 pixels, and a "
                          "dense head needs the size kept: set model.whiten=false for segmentation")
    for m in encoder.modules():
        if isinstance(m, nn.Conv2d) and _side(m.stride) == 1 and (
                _side(m.kernel_size) % 2 == 0 or _side(m.padding) != _side(m.dilation) * (_side(m.kernel_size) - 1) // 2):
            raise ConfigError("name", "a dense head needs convs that keep the map's size: set "
                              "model.conv_args.padding=auto and an odd model.conv_args.kernel_size")
    if upsample != "unpool":
        return
    pool = encoder.unit_args.get("pool", "max")
    if pool != "max":
        raise ConfigError("upsample", f"unpool reuses the encoder's max-pooling indices (SegNet); "
                          f"model.pool={pool} keeps none. Use model.pool=max, or another head.upsample: "
                          f"{', '.join(n for n in UPSAMPLERS.names() if n != 'unpool')}")
    order = list(encoder.unit_args.get("order", ["conv", "pool"]))
    if order.index("pool") < order.index("conv"):
        raise ConfigError("upsample", f"unpool needs the pool after the conv in model.order (it unpools maps "
                          f"of the conv's width); got {order}")
    if any(isinstance(m, nn.Conv2d) and _side(m.stride) != 1 for m in encoder.modules()):
        raise ConfigError("upsample", "unpool undoes max pools only; with model.conv_args.stride > 1 the convs "
                          "downsample too. Use model.conv_args.stride=1, or another head.upsample")


def _check_choices(style: str, upsample: str, skips: Any, align_corners: Any) -> None:
    HEAD_STYLES.get(style, "style")
    UPSAMPLERS.get(upsample, "upsample")
    if not isinstance(skips, bool):
        raise ConfigError("skips", f"{skips!r} must be true or false")
    if align_corners not in (None, False, True):
        raise ConfigError("align_corners", f"{align_corners!r} must be true, false or null")
    if align_corners and upsample not in INTERPOLATING:
        raise ConfigError("align_corners", f"only {' and '.join(INTERPOLATING)} interpolation have corners to "
                          f"align; head.upsample={upsample} does not take it. Leave head.align_corners null "
                          "(or false), or pick head.upsample=bilinear or bicubic")


# ---------------------------------------------------------------- heads

class Decoder(nn.Module):
    """A dense head: `forward(features, pools, size)` gives N x num_classes x size."""

    needs_indices = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.out_channels = num_classes


class OneShot(Decoder):
    """1x1 classifier on the bottleneck, one upsampling to the input size (FCN-32s)."""

    def __init__(self, encoder: Encoder, num_classes: int, upsample: str, upsample_args: dict[str, Any]):
        super().__init__(num_classes)
        factor = math.prod(stage_factor(s) for s in encoder)
        self.classifier = nn.Conv2d(encoder.out_channels, num_classes, 1)
        self.up = call_with_accepted(UPSAMPLERS.get(upsample, "upsample"), upsample_args, num_classes, factor)

    def forward(self, feats: list[Tensor], pools: list[PoolIndices | None] | None, size: Size) -> Tensor:
        x = self.classifier(feats[-1])
        x = self.up(x, size)
        return x


class Level(nn.Module):
    """One step of a progressive decoder: upsample (unless the stage kept its size), then a conv unit."""

    def __init__(self, up: nn.Module | None, unit: nn.Module):
        super().__init__()
        self.up, self.unit = up, unit


class Progressive(Decoder):
    """Stage by stage back to the input size: upsample by the stage's factor, [concat the
    encoder's map of that size,] conv unit; then a 1x1 classifier. Widths mirror the encoder."""

    def __init__(self, encoder: Encoder, num_classes: int, upsample: str, upsample_args: dict[str, Any],
                 skips: bool):
        super().__init__(num_classes)
        self.skips = skips
        self.needs_indices = upsample == "unpool"
        unit_args = dict(encoder.unit_args)
        unit_args["conv_args"] = {**unit_args["conv_args"], "stride": 1}
        widths = encoder.stage_channels
        levels = []
        for i in reversed(range(len(widths))):  # deep to shallow
            factor, stage = stage_factor(encoder[i]), encoder[i]
            up = None if factor == 1 else call_with_accepted(
                UPSAMPLERS.get(upsample, "upsample"), {**upsample_args, "stage": stage}, widths[i], factor)
            skip = widths[i - 1] if skips and i > 0 else 0
            unit = build_unit(widths[i] + skip, widths[max(i - 1, 0)], with_pool=False, **unit_args)
            levels.append(Level(up, unit))
        self.levels = nn.ModuleList(levels)
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, feats: list[Tensor], pools: list[PoolIndices | None] | None, size: Size) -> Tensor:
        x = feats[-1]
        for i, level in zip(reversed(range(len(feats))), self.levels):
            target = feats[i - 1].shape[-2:] if i > 0 else size
            if level.up is not None:
                x = level.up(x, target, pools[i] if pools else None)
            if self.skips and i > 0:
                x = torch.cat([x, feats[i - 1]], dim=1)
            x = level.unit(x)
        return self.classifier(x)


@HEAD_STYLES.register("oneshot", "1x1 classifier at the bottleneck, one upsampling to the input (FCN-32s)")
def oneshot(encoder: Encoder, num_classes: int, upsample: str, upsample_args: dict[str, Any],
            skips: bool = False) -> Decoder:
    if upsample == "unpool":
        raise ConfigError("upsample", "unpool undoes one max pool at a time with that stage's indices "
                          "(SegNet), so it needs head.style=progressive")
    if skips:
        raise ConfigError("skips", "oneshot upsamples once, from the bottleneck (FCN-32s): there is no "
                          "decoder step to add encoder features to. Use head.style=progressive")
    return OneShot(encoder, num_classes, upsample, upsample_args)


@HEAD_STYLES.register("progressive", "upsample + conv unit per stage (SegNet); skips concat encoder maps (U-Net)")
def progressive(encoder: Encoder, num_classes: int, upsample: str, upsample_args: dict[str, Any],
                skips: bool = False) -> Decoder:
    return Progressive(encoder, num_classes, upsample, upsample_args, skips)


@HEADS.register("decoder", "per-pixel scores at the input size (segmentation): head.style, head.upsample, head.skips")
def decoder_head(in_channels: int, num_classes: int, encoder: Encoder | None = None, style: str = "progressive",
                 upsample: str = "bilinear", skips: bool = False, align_corners: bool | None = None,
                 smooth_init: bool = True) -> Decoder:
    """The dense head; its errors name keys relative to the head section (`style`, `upsample`)."""
    if encoder is None:
        raise ConfigError("name", "the decoder head reads every encoder stage: build it with "
                          "build_model(head='decoder', ...) or build_head('decoder', ..., encoder=encoder)")
    _check_choices(style, upsample, skips, align_corners)
    _check_encoder(encoder, upsample)
    upsample_args = {"align_corners": align_corners, "smooth_init": smooth_init}
    return HEAD_STYLES.get(style, "style")(encoder, num_classes, upsample, upsample_args, skips)


class Segmenter(nn.Module):
    """An encoder and a dense head: N x C x H x W in, N x num_classes x H x W out."""

    def __init__(self, encoder: Encoder, head: Decoder):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.out_channels = head.out_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.head.needs_indices:
            feats, pools = self.encoder.features_with_indices(x)
        else:
            feats, pools = self.encoder.features(x), None
        return self.head(feats, pools, x.shape[-2:])


def assemble(encoder: Encoder, head: nn.Module) -> nn.Module:
    """The model for a head: a Segmenter for a dense head, a Classifier otherwise."""
    return Segmenter(encoder, head) if isinstance(head, Decoder) else Classifier(encoder, head)
