"""Model building blocks as a plain-Python library (no Hydra, no OmegaConf).

>>> from sampler.blocks import build_model
>>> model = build_model(widths=[32, 64], pool="avg", norm="batch", act="relu")
>>> from sampler.blocks import build_segmenter
>>> model = build_segmenter(widths=[32, 64], style="progressive", upsample="bilinear", skips=True)
"""
from .heads import HEAD_STYLES, UPSAMPLERS, Decoder, Segmenter, assemble, build_segmenter
from .layers import ACTS, NORMS, POOLS
from .model import (HEADS, PARTS, Classifier, ConvUnit, Encoder, build_encoder, build_head, build_model,
                    build_unit, init_weights)
from .registry import ConfigError, Registry

REGISTRIES = {"pool": POOLS, "norm": NORMS, "act": ACTS, "head": HEADS}

__all__ = ["ACTS", "HEADS", "HEAD_STYLES", "NORMS", "PARTS", "POOLS", "REGISTRIES", "UPSAMPLERS", "Classifier",
           "ConfigError", "ConvUnit", "Decoder", "Encoder", "Registry", "Segmenter", "assemble", "build_encoder",
           "build_head", "build_model", "build_segmenter", "build_unit", "init_weights"]
