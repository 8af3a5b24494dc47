"""The model a config describes, through the one builder (`sampler.blocks.build_model`),
validated before any data is read."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sampler.blocks import build_model

from ..data import DATASETS, DataSpec


def make_model(cfg: dict[str, Any]) -> tuple[nn.Module, DataSpec]:
    """The model of a composed config (`model.*`, `head.*`), sized for `data.*`: a
    Classifier, or a Segmenter when the head is dense (head.name=decoder)."""
    spec = DATASETS.get(cfg["data"]["name"], "data.name").spec(**cfg["data"])
    head = dict(cfg["head"])
    model = build_model(**cfg["model"], head=head.pop("name"), head_args=head, num_classes=spec.num_classes,
                        in_channels=spec.in_channels, input_size=spec.input_size)
    return model, spec


def example_input(spec: DataSpec, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, spec.in_channels, *spec.height_width)
