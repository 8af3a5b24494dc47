"""Model building blocks as a plain-Python library (no Hydra, no OmegaConf).

>>> from sampler.blocks import build_model
>>> model = build_model(widths=[32, 64], pool="avg", norm="batch", act="relu")
>>> model = build_model(widths=[32, 64], head="decoder", style="progressive", upsample="bilinear", skips=True)
"""
from .build import build_model
from .heads import HEAD_STYLES, UPSAMPLERS, Decoder, Segmenter, assemble
from .layers import ACTS, NORMS, POOLS
from .model import (HEADS, PARTS, Classifier, ConvUnit, Encoder, build_encoder, build_head, build_unit,
                    init_weights)
from .registry import ConfigError, Registry

__all__ = ["ACTS", "HEADS", "HEAD_STYLES", "NORMS", "PARTS", "POOLS", "UPSAMPLERS", "Classifier",
           "ConfigError", "ConvUnit", "Decoder", "Encoder", "Registry", "Segmenter", "assemble", "build_encoder",
           "build_head", "build_model", "build_unit", "init_weights"]
