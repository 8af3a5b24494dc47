"""Model building blocks as a plain-Python library (no Hydra, no OmegaConf).

>>> from sampler.blocks import build_model
>>> model = build_model(widths=[32, 64], pool="avg", norm="batch", act="relu")
"""
from .layers import ACTS, NORMS, POOLS
from .model import (HEADS, PARTS, Classifier, ConvUnit, Encoder, build_encoder, build_head, build_model,
                    build_unit, init_weights)
from .registry import ConfigError, Registry

REGISTRIES = {"pool": POOLS, "norm": NORMS, "act": ACTS, "head": HEADS}

__all__ = ["ACTS", "HEADS", "NORMS", "PARTS", "POOLS", "REGISTRIES", "Classifier", "ConfigError",
           "ConvUnit", "Encoder", "Registry", "build_encoder", "build_head", "build_model", "build_unit",
           "init_weights"]
