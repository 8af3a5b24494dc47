"""CIFAR-10, from the official python pickles or from an ImageFolder tree of JPEG/PNG
files, decoded once into the cache (DESIGN §6). With data.download=auto (or true) the
official archive is fetched into data.root when neither is there (download.py)."""
from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .base import DATASETS, Dataset, DataSpec, Split
from . import fingerprint
from .cache import cached_tensors
from .fingerprint import source_key
from .decode import read_image_folder
from .download import DownloadFailed, fetch_and_unpack
from .splits import channel_stats, split_test, split_train

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
                raise ConfigError("data.root", f"cannot read CIFAR-10 batch {path / name}: {e}. Download it "
                                  "again (delete the folder; data.download=auto fetches it) or point data.root "
                                  "elsewhere") from e
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


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
PICKLE_FOLDER = "cifar-10-batches-py"
PICKLE_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def download_mode(download: object) -> bool:
    """`data.download`: auto or true fetch CIFAR-10 when it is missing, false never does."""
    if isinstance(download, bool):
        return download
    if isinstance(download, str) and download.strip().lower() in ("auto", "true", "false"):
        return download.strip().lower() != "false"
    raise ConfigError("data.download", f"{download!r} must be auto, true or false (auto and true fetch "
                      "CIFAR-10 into data.root when it is not there)")


def _download(root: Path, url: str, md5: str | None) -> None:
    try:
        fetch_and_unpack(str(url), None if md5 is None else str(md5), root, PICKLE_FOLDER, PICKLE_FILES,
                         what="CIFAR-10")
    except DownloadFailed as e:
        where = root.resolve()
        raise ConfigError("data.download", f"could not download CIFAR-10 from {url} ({e.reason}). Download it "
                          f"by hand and unpack it into {where} so that {where / PICKLE_FOLDER / 'data_batch_1'} "
                          "exists, or point data.root at a copy (or set SAMPLER_DATA); data.download=false "
                          "turns this off") from e


def load_cifar10_tensors(root: str | Path, download: bool | str = False, cache_dir: str | Path | None = None,
                         url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5) -> dict[str, Tensor]:
    """CIFAR-10 train/test as uint8 tensors, decoded once and cached; with `download`
    (auto or true) the official archive is fetched into `root` when no copy is there."""
    root = Path(root).expanduser()
    fetch = download_mode(download)
    found = _find_source(root)
    if found is None and fetch:
        _download(root, url, md5)
        found = _find_source(root)
    if found is None:
        raise ConfigError("data.root", f"no CIFAR-10 under {root.resolve()} (looked for "
                          "cifar-10-batches-py/ with the official pickles and for cifar10/{train,test}/<class>/ "
                          "image folders). Set data.root=<folder that holds one of them> (or the SAMPLER_DATA "
                          "environment variable), or set data.download=auto to fetch it when online")
    kind, path = found
    return cached_tensors(cache_dir, f"cifar10-{kind}-{source_key(kind, path, _entries(kind, path))}.pt",
                          lambda: _read_pickles(path) if kind == "pickle" else _read_folder(path),
                          len(CIFAR10_CLASSES))


def _entries(kind: str, path: Path) -> list[Path]:
    """What the source's fingerprint covers: the pickle folder's files, or each split's class folders."""
    return list(path.iterdir()) if kind == "pickle" else [p for split in ("train", "test")
                                                         for p in (path / split).iterdir()]


def load_cifar10(root: str, download: bool | str = False, subset: int | None = None, val_size: int = 5000,
                 split_seed: int = 0, cache_dir: str | None = None, test_size: int | None = None,
                 url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5) -> Dataset:
    t = load_cifar10_tensors(root, download, cache_dir, url, md5)
    train, val = split_train(Split(t["train_x"], t["train_y"]), val_size, subset, split_seed, num_classes=10)
    test = split_test(Split(t["test_x"], t["test_y"]), test_size, split_seed, num_classes=10)
    mean, std = channel_stats(train.images)
    return Dataset("cifar10", train, val, test, CIFAR10_CLASSES, mean, std, str(Path(root).expanduser().resolve()))


@DATASETS.register("cifar10", "CIFAR-10: 32x32 RGB, 10 classes, 50k train / 10k test")
class Cifar10:
    task = "classification"  # the task.name it serves (runner.check_config)

    @staticmethod
    def spec(**_: object) -> DataSpec:
        return DataSpec(in_channels=3, input_size=32, num_classes=10)

    load = staticmethod(load_cifar10)

    @staticmethod
    def warm(root: str, **_: object) -> None:
        """Start the source's fingerprint in a child process (fingerprint.start); the run
        imports torch._dynamo meanwhile. Nothing when the source is not there yet."""
        path = Path(root).expanduser()
        with contextlib.suppress(OSError):
            if (found := _find_source(path)) is not None:
                fingerprint.start(*found, _entries(*found))

    @staticmethod
    def fetch(root: str, download: bool | str = False, url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5,
              **_: object) -> None:
        """Download the data if it is missing and `download` allows: what a sweep's
        launching process does once, before its jobs start (they would race otherwise)."""
        path = Path(root).expanduser()
        if _find_source(path) is None and download_mode(download):
            _download(path, url, md5)
