"""The parts of a Conv→Norm→Act→Pool unit, each a registry of short names.

Every builder takes the channel count first and PyTorch's own argument names
after it; `call_with_accepted` hands each builder only the arguments it knows,
so one `norm_args` section serves BatchNorm, GroupNorm and InstanceNorm alike.
A builder returns None for `none`: that part is left out of the unit. Each
activation names the `nonlinearity` whose gain He init uses for the convs before it
(`init_weights`): GELU and SiLU behave like ReLU away from zero, so they take ReLU's
gain, as in timm and torchvision; `none` takes the linear gain.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from .registry import ConfigError, Registry, is_number

POOLS: Registry = Registry("pool")
NORMS: Registry = Registry("norm")
ACTS: Registry = Registry("act")


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d that also hands back where each max came from when asked:
    `pool(x, with_indices=True)`, for SegNet's unpooling. Asked through the module
    call, so forward hooks (sampler inspect's table) see this layer either way."""

    def forward(self, x: Tensor, with_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if with_indices:
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                return_indices=True)
        return super().forward(x)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def sliding_window(module: nn.Module) -> tuple[tuple[int, int], ...] | None:
    """(kernel, stride, dilation), each (H, W), of a layer that slides a window over the
    map (conv, max or average pool); None for any other layer."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        return _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.dilation)
    if isinstance(module, nn.AvgPool2d):
        return _pair(module.kernel_size), _pair(module.stride or module.kernel_size), (1, 1)
    return None


@POOLS.register("max", "max pooling (nn.MaxPool2d)")
def max_pool(channels: int, kernel_size: int = 2, stride: int = 2, padding: int = 0) -> nn.Module:
    return MaxPool2d(kernel_size, stride, padding)


@POOLS.register("avg", "average pooling (nn.AvgPool2d)")
def avg_pool(channels: int, kernel_size: int = 2, stride: int = 2, padding: int = 0) -> nn.Module:
    return nn.AvgPool2d(kernel_size, stride, padding)


@POOLS.register("conv", "learned downsampling: a strided conv with kernel_size/stride of the pool")
def conv_pool(channels: int, kernel_size: int = 2, stride: int = 2, padding: int = 0) -> nn.Module:
    return nn.Conv2d(channels, channels, kernel_size, stride, padding)


@POOLS.register("none", "no downsampling in the stage")
def no_pool(channels: int, **_: object) -> None:
    return None


def _freeze_scale(norm: nn.Module, freeze_scale: bool) -> nn.Module:
    """`norm_args.freeze_scale`: the gain stays 1 and only the bias learns (airbench's
    BatchNorm): the conv before a norm is scale-invariant, so a learned gain adds little."""
    if not isinstance(freeze_scale, bool):
        raise ConfigError("norm_args.freeze_scale", f"{freeze_scale!r} must be true or false")
    if freeze_scale:
        if norm.weight is None:
            raise ConfigError("norm_args.freeze_scale", "there is no scale to freeze with norm_args.affine=false; "
                              "set norm_args.affine=true or norm_args.freeze_scale=false")
        norm.weight.requires_grad_(False)
    return norm


def _check_norm_args(eps: Any, momentum: Any = None) -> None:
    """`norm_args.eps` and `.momentum`, when the norm is built: torch takes any value here and
    fails, or quietly fills its running statistics with NaN, only once the model runs."""
    if not is_number(eps) or not 0 < eps < float("inf"):
        raise ConfigError("norm_args.eps", f"{eps!r} must be a number > 0, added to the variance before its "
                          "square root (torch's default: 1e-5)")
    if momentum is not None and (not is_number(momentum) or not 0 <= momentum <= 1):
        raise ConfigError("norm_args.momentum", f"{momentum!r} must be in [0, 1]: the weight of each batch in the "
                          "running statistics (torch's default: 0.1; null: a cumulative average)")


@NORMS.register("batch", "BatchNorm2d: per-channel batch statistics, running mean/var")
def batch_norm(channels: int, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
               track_running_stats: bool = True, freeze_scale: bool = False) -> nn.Module:
    _check_norm_args(eps, momentum)
    return _freeze_scale(nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=affine,
                                        track_running_stats=track_running_stats), freeze_scale)


@NORMS.register("group", "GroupNorm with norm_args.num_groups groups")
def group_norm(channels: int, num_groups: int = 8, eps: float = 1e-5, affine: bool = True,
               freeze_scale: bool = False) -> nn.Module:
    _check_norm_args(eps)
    if channels % num_groups:
        raise ConfigError("norm_args.num_groups",
                          f"{num_groups} groups do not divide {channels} channels; "
                          "pick a divisor of every stage width")
    return _freeze_scale(nn.GroupNorm(num_groups, channels, eps=eps, affine=affine), freeze_scale)


@NORMS.register("instance", "InstanceNorm2d: per-sample, per-channel statistics")
def instance_norm(channels: int, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
                  track_running_stats: bool = False, freeze_scale: bool = False) -> nn.Module:
    _check_norm_args(eps, momentum)
    return _freeze_scale(nn.InstanceNorm2d(channels, eps=eps, momentum=momentum, affine=affine,
                                           track_running_stats=track_running_stats), freeze_scale)


@NORMS.register("layer", "LayerNorm over (C, H, W), as GroupNorm with one group")
def layer_norm(channels: int, eps: float = 1e-5, affine: bool = True, freeze_scale: bool = False) -> nn.Module:
    _check_norm_args(eps)
    return _freeze_scale(nn.GroupNorm(1, channels, eps=eps, affine=affine), freeze_scale)


@NORMS.register("none", "no normalisation")
def no_norm(channels: int, **_: object) -> None:
    return None


@ACTS.register("relu", "ReLU (act_args.inplace overwrites its input)", init="relu")
def relu(channels: int, inplace: bool = False) -> nn.Module:
    return nn.ReLU(inplace=inplace)


@ACTS.register("leaky_relu", "LeakyReLU with act_args.negative_slope", init="leaky_relu")
def leaky_relu(channels: int, negative_slope: float = 0.01, inplace: bool = False) -> nn.Module:
    return nn.LeakyReLU(negative_slope, inplace=inplace)


@ACTS.register("gelu", "GELU (act_args.approximate: none | tanh)", init="relu")
def gelu(channels: int, approximate: str = "none") -> nn.Module:
    if approximate not in ("none", "tanh"):
        raise ConfigError("act_args.approximate", f"unknown {approximate!r}; choose one of: none, tanh")
    return nn.GELU(approximate=approximate)


@ACTS.register("silu", "SiLU / swish", init="relu")
def silu(channels: int, inplace: bool = False) -> nn.Module:
    return nn.SiLU(inplace=inplace)


@ACTS.register("none", "identity (no non-linearity)", init="linear")
def no_act(channels: int, **_: object) -> None:
    return None
