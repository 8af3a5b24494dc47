"""`build_model`: the one way to turn plain values into a model, a classifier or a
segmenter, used by `sampler train`, `inspect`, `bench` and library users alike."""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .heads import assemble
from .model import HEADS, INITS, build_encoder, build_head, init_weights
from .registry import ConfigError, is_number


def build_model(*, head: Any = "linear", num_classes: int = 10, init: str = "he", dirac: bool = False,
                init_scale: float = 1.0, head_args: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """The one model builder: `build_encoder` and a registered head, initialised by the
    `init` scheme for the configured activation (`dirac`: conv units start as the
    identity), its conv and linear weights multiplied by `init_scale`.
    Arguments `build_encoder` takes build the encoder (errors name
    them `model.*`); the rest go to the head (`head.*`): a `Classifier` for `linear`, a
    `Segmenter` for the dense `decoder` head. With `head_args`, the head's arguments
    come from there alone and every other one must be the stack's, so each error names
    the key where the config has it (`make_model`). Plain Python values only, so it works
    without Hydra:

    >>> model = build_model(widths=[16, 32], pool="avg", norm="none")
    >>> seg = build_model(widths=[16, 32], head="decoder", upsample="unpool", skips=True, num_classes=11)
    """
    encoder_params = inspect.signature(build_encoder).parameters
    encoder_args = {k: v for k, v in kwargs.items() if k in encoder_params}
    if head_args is None:
        head_args = {k: v for k, v in kwargs.items() if k not in encoder_params}
    elif unknown := sorted(set(kwargs) - set(encoder_params)):
        keys = sorted({*encoder_params, "init", "dirac", "init_scale"} - {"in_channels", "input_size"})  # data.*'s
        raise ConfigError(f"model.{unknown[0]}", f"no model key {unknown[0]}; the stack takes: {', '.join(keys)}")
    try:
        encoder = build_encoder(**encoder_args)
    except ConfigError as e:
        raise e.with_prefix("model") from None
    try:
        HEADS.check_args(head_args, "", positional=2, spec=head, ignore=("encoder",))
        head_module = build_head(head, encoder.out_channels, num_classes, encoder=encoder, **head_args)
    except ConfigError as e:
        raise e.with_prefix("head") from None
    if not is_number(init_scale) or not init_scale > 0:
        raise ConfigError("model.init_scale", f"{init_scale!r} must be a number > 0 (1 = the default init)")
    if init not in INITS:
        raise ConfigError("model.init", f"{init!r}; choose one of: {', '.join(INITS)} (he: torchvision's, "
                          "torch: PyTorch's defaults, as airbench)")
    if not isinstance(dirac, bool):
        raise ConfigError("model.dirac", f"{dirac!r} must be true or false")
    act = encoder.unit_args["act"]
    return init_weights(assemble(encoder, head_module), act, encoder.unit_args["act_args"], init_scale,
                        init, dirac)
