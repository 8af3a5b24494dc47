"""The types every data set shares, and the registry that names them (DESIGN §3, §6).

A data set is held in memory as uint8 tensors: `Split` is one split's images and
labels, `Dataset` the three splits with their class names and channel statistics,
and `DataSpec` what the model must know before any data is read.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sampler.blocks.registry import Registry

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VOID = 255  # the ignored label; every segmentation set maps its void to it on load


@dataclass
class Split:
    """Images as uint8 N×C×H×W and integer labels (or H×W masks), in memory."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split | None
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the 0-1 scale, from the training split
    std: tuple[float, ...]
    source: str

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def input_size(self) -> int:
        return self.train.images.shape[-1]


@dataclass(frozen=True)
class DataSpec:
    """What the model needs to know before any data is loaded."""

    in_channels: int
    input_size: int | tuple[int, int]  # px: the side of a square, or (height, width)
    num_classes: int

    @property
    def height_width(self) -> tuple[int, int]:
        size = self.input_size
        return (size, size) if isinstance(size, int) else (size[0], size[1])


# name → a class with `spec(**data_cfg) -> DataSpec` and `load(**data_cfg) -> Dataset`;
# each data set's module registers itself (experiments/data/__init__.py imports them all).
DATASETS: Registry = Registry("dataset")
