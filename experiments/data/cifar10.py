"""CIFAR-10, from the official python pickles or from an ImageFolder tree of JPEG/PNG
files, decoded once into the cache (DESIGN §6)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .base import DATASETS, Dataset, DataSpec, Split
from .cache import cached_tensors, source_key
from .decode import read_image_folder
from .splits import channel_stats, split_train

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def _find_source(root: Path) -> tuple[str, Path] | None:
    for kind, path in (("pickle", root / "cifar-10-batches-py"), ("folder", root / "cifar10"),
                       ("pickle", root), ("folder", root)):
        if kind == "pickle" and (path / "data_batch_1").is_file():
            return kind, path
        if kind == "folder" and (path / "train").is_dir() and (path / "test").is_dir():
            return kind, path
    return None


def _read_pickles(path: Path) -> dict[str, Tensor]:
    def load(names: list[str]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for name in names:
            try:
                with open(path / name, "rb") as f:
                    batch = pickle.load(f, encoding="latin1")
            except (OSError, pickle.UnpicklingError, EOFError) as e:
                raise ConfigError("data.root", f"cannot read CIFAR-10 batch {path / name}: {e}. "
                                  "Re-download it (data.download=true) or point data.root elsewhere") from e
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = load([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = load(["test_batch"])
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)


def _read_folder(path: Path) -> dict[str, Tensor]:
    train_x, train_y, classes = read_image_folder(path / "train")
    test_x, test_y, _ = read_image_folder(path / "test", classes)
    if classes != CIFAR10_CLASSES:
        raise ConfigError("data.root", f"{path} holds classes {list(classes)}, not CIFAR-10's")
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types
        raise ConfigError("data.download", f"downloading CIFAR-10 into {root} failed ({e}). Check the "
                          "network, or set data.root to a folder that already holds the data") from e


def load_cifar10_tensors(root: str | Path, download: bool = False,
                         cache_dir: str | Path | None = None) -> dict[str, Tensor]:
    """CIFAR-10 train/test as uint8 tensors, decoded once and cached."""
    root = Path(root).expanduser()
    found = _find_source(root)
    if found is None and download:
        _download(root)
        found = _find_source(root)
    if found is None:
        raise ConfigError("data.root", f"no CIFAR-10 under {root.resolve()} (looked for "
                          "cifar-10-batches-py/ with the official pickles and for cifar10/{train,test}/<class>/ "
                          "image folders). Set data.root=<folder that holds one of them> (or the SAMPLER_DATA "
                          "environment variable), or add data.download=true to fetch it when online")
    kind, path = found
    entries = path.iterdir() if kind == "pickle" else (p for split in ("train", "test") for p in (path / split).iterdir())
    return cached_tensors(cache_dir, f"cifar10-{kind}-{source_key(kind, path, entries)}.pt",
                          lambda: _read_pickles(path) if kind == "pickle" else _read_folder(path))


def load_cifar10(root: str, download: bool = False, subset: int | None = None, val_size: int = 5000,
                 split_seed: int = 0, cache_dir: str | None = None) -> Dataset:
    t = load_cifar10_tensors(root, download, cache_dir)
    train, val = split_train(Split(t["train_x"], t["train_y"]), val_size, subset, split_seed, num_classes=10)
    mean, std = channel_stats(train.images)
    return Dataset("cifar10", train, val, Split(t["test_x"], t["test_y"]), CIFAR10_CLASSES,
                   mean, std, str(Path(root).expanduser().resolve()))


@DATASETS.register("cifar10", "CIFAR-10: 32x32 RGB, 10 classes, 50k train / 10k test")
class Cifar10:
    @staticmethod
    def spec(**_: object) -> DataSpec:
        return DataSpec(in_channels=3, input_size=32, num_classes=10)

    load = staticmethod(load_cifar10)
