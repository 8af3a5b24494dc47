"""Data sets in memory as tensors (DESIGN §6): one module per data set, each registering
itself in `DATASETS`; importing this package registers them all."""
from . import camvid, cifar10, pets  # noqa: F401  (they register themselves)
from .base import DATASETS, IMAGE_SUFFIXES, VOID, Dataset, DataSpec, Split
from .cache import cache_root
from .loaders import SegmentationLoader, TensorLoader

__all__ = ["DATASETS", "IMAGE_SUFFIXES", "VOID", "DataSpec", "Dataset", "SegmentationLoader", "Split",
           "TensorLoader", "cache_root"]
