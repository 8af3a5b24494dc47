"""Data in memory as tensors (DESIGN §6).

CIFAR-10 is read once, from the official pickles or from an ImageFolder tree of
JPEG/PNG files, into a uint8 tensor file in sampler's own cache folder (never
beside the source, which may be read-only). The cache file name carries a key
made from the source's path and file stats, so a changed source is re-read.
Training then indexes, crops and flips whole batches with tensor ops, on the
device the model trains on: no per-image PIL transforms, no worker processes.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..runs.atomic import save_torch
from sampler.blocks.registry import Registry

from ..errors import ConfigError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def default_cache_dir() -> Path:
    base = os.environ.get("SAMPLER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sampler")
    return Path(base)


def cache_root(cache_dir: str | Path | None) -> Path:
    """`data.cache_dir`, or the default when it is null."""
    return Path(cache_dir or default_cache_dir()).expanduser()


@dataclass
class Split:
    """Images as uint8 N×C×H×W and integer labels, in memory."""

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


# ---------------------------------------------------------------- reading CIFAR-10

def _find_cifar_source(root: Path) -> tuple[str, Path] | None:
    for kind, path in (("pickle", root / "cifar-10-batches-py"), ("folder", root / "cifar10"),
                       ("pickle", root), ("folder", root)):
        if kind == "pickle" and (path / "data_batch_1").is_file():
            return kind, path
        if kind == "folder" and (path / "train").is_dir() and (path / "test").is_dir():
            return kind, path
    return None


def _source_key(kind: str, path: Path, entries: Iterable[Path] | None = None) -> str:
    """Cheap fingerprint: resolved path plus stats of the files or class folders
    (`entries`; by default CIFAR-10's pickles or class folders)."""
    h = hashlib.sha1(f"{kind}:{path.resolve()}".encode())
    if entries is None:
        entries = path.iterdir() if kind == "pickle" else (
            p for split in ("train", "test") for p in (path / split).iterdir())
    for p in sorted(entries):
        st = p.stat()
        n = len(os.listdir(p)) if p.is_dir() else st.st_size
        h.update(f"{p.name}:{n}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


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


def _decode(file: Path) -> Tensor:
    import warnings

    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of torchcodec, which
            # is not a dependency here; they still work and are 5x faster than PIL.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(read_file(str(file)), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise ConfigError("data.root", f"cannot decode image {file} ({e}). The file is corrupt or "
                          "not an image: replace it, delete it, or point data.root at a good copy") from e


def read_image_folder(split_dir: Path, classes: tuple[str, ...] | None = None) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """An ImageFolder tree `<split_dir>/<class>/<image>` as uint8 N×C×H×W and labels."""
    found = tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir()))
    classes = classes or found
    if found != classes:
        raise ConfigError("data.root", f"{split_dir} has class folders {list(found)}, expected "
                          f"{list(classes)}")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (split_dir / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        images += [_decode(f) for f in files]
        labels += [label] * len(files)
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise ConfigError("data.root", f"images in {split_dir} differ in size ({sorted(shapes)[:3]}); "
                          "this reader expects one size per data set")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes


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
    found = _find_cifar_source(root)
    if found is None and download:
        _download(root)
        found = _find_cifar_source(root)
    if found is None:
        raise ConfigError("data.root", f"no CIFAR-10 under {root.resolve()} (looked for "
                          "cifar-10-batches-py/ with the official pickles and for cifar10/{train,test}/<class>/ "
                          "image folders). Set data.root=<folder that holds one of them> (or the SAMPLER_DATA "
                          "environment variable), or add data.download=true to fetch it when online")
    kind, path = found
    return cached_tensors(cache_dir, f"cifar10-{kind}-{_source_key(kind, path)}.pt",
                          lambda: _read_pickles(path) if kind == "pickle" else _read_folder(path))


def cached_tensors(cache_dir: str | Path | None, name: str, read: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """`read()` once; later calls load the tensor file `name` from the cache folder."""
    cache = cache_root(cache_dir) / name
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a stale or damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    tensors = read()
    try:
        save_torch(cache, tensors)
    except OSError:
        pass  # an unwritable cache only costs the next run a re-decode
    return tensors


# ---------------------------------------------------------------- splits

def balanced_indices(labels: Tensor, per_class: int | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded, class-balanced choice of `per_class` indices per class, and the rest."""
    chosen, rest = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = len(idx) if per_class is None else per_class
        chosen.append(idx[:k])
        rest.append(idx[k:])
    return torch.cat(chosen).sort().values, torch.cat(rest).sort().values


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0-1 scale, exact, from a 256-bin histogram of
    the uint8 values: a float copy of the training set costs seconds at start-up."""
    hist = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256)
                        for c in range(images.shape[1])]).double()
    value = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = (hist * value).sum(1) / n
    var = ((hist * value * value).sum(1) - n * mean * mean) / (n - 1)
    return tuple(mean.tolist()), tuple(var.clamp_min(0).sqrt().tolist())


def split_train(train: Split, val_size: int, subset: int | None, num_classes: int,
                split_seed: int) -> tuple[Split, Split | None]:
    """Hold out a class-balanced validation split, then take the training subset.

    Both use `split_seed`, not the run's seed: every variant and every seed of a
    sweep sees the same images, so differences come from the model, not the data.
    """
    g = torch.Generator().manual_seed(split_seed)
    val = None
    if val_size:
        if val_size % num_classes or val_size >= len(train):
            raise ConfigError("data.val_size", f"{val_size} must be a multiple of the {num_classes} classes "
                              f"and smaller than the {len(train)} training images (0 turns validation off)")
        val_idx, train_idx = balanced_indices(train.labels, val_size // num_classes, g)
        train, val = train.take(train_idx), train.take(val_idx)
    if subset is not None:
        if subset < num_classes or subset > len(train):
            raise ConfigError("data.subset", f"{subset} must be between {num_classes} and the {len(train)} "
                              "training images left after the validation split (null uses all)")
        idx, _ = balanced_indices(train.labels, subset // num_classes, g)
        train = train.take(idx)
    return train, val


def load_cifar10(root: str, download: bool = False, subset: int | None = None, val_size: int = 5000,
                 split_seed: int = 0, cache_dir: str | None = None) -> Dataset:
    t = load_cifar10_tensors(root, download, cache_dir)
    train, val = split_train(Split(t["train_x"], t["train_y"]), val_size, subset, 10, split_seed)
    mean, std = channel_stats(train.images)
    return Dataset("cifar10", train, val, Split(t["test_x"], t["test_y"]), CIFAR10_CLASSES,
                   mean, std, str(Path(root).expanduser().resolve()))


# ---------------------------------------------------------------- batches

class TensorLoader:
    """Batches from in-memory uint8 tensors, augmented as whole batches.

    Random crop (reflect-padded by `crop_padding` pixels) and horizontal flip run
    on uint8 before the float conversion, on the training device. The seeded
    `generator` fixes both the data order and the augmentation.
    """

    def __init__(self, split: Split, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device, *, shuffle: bool = False, crop_padding: int = 0,
                 flip: bool = False, drop_last: bool = False, channels_last: bool = False,
                 generator: torch.Generator | None = None):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle, self.crop_padding, self.flip = shuffle, crop_padding, flip
        self.drop_last = drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator or torch.Generator()
        self.device = device
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape) * 255
        self.std = torch.tensor(std, device=device).view(shape) * 255

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.augment(self.images[idx], self.labels[idx])
            x = (x.float() - self.mean) / self.std
            yield x.contiguous(memory_format=self.memory_format), y

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One batch's images and labels as the model sees them, before normalisation."""
        if self.crop_padding:
            x = self._random_crop(x)
        if self.flip:
            x = self._random_flip(x)
        return x, y

    def _rand(self, *size: int, high: int) -> Tensor:
        return torch.randint(high, size, generator=self.generator).to(self.device)

    def _random_crop(self, x: Tensor) -> Tensor:
        p, (b, c, h, w) = self.crop_padding, x.shape
        padded = torch.nn.functional.pad(x.float(), (p, p, p, p), mode="reflect").to(x.dtype)
        dy, dx = self._rand(b, high=2 * p + 1), self._rand(b, high=2 * p + 1)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chan, rows, cols]

    def _random_flip(self, x: Tensor) -> Tensor:
        flip = self._rand(x.shape[0], high=2).bool().view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x)


# ---------------------------------------------------------------- registry

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


DATASETS: Registry = Registry("dataset")


@DATASETS.register("cifar10", "CIFAR-10: 32x32 RGB, 10 classes, 50k train / 10k test")
class Cifar10:
    @staticmethod
    def spec(**_: object) -> DataSpec:
        return DataSpec(in_channels=3, input_size=32, num_classes=10)

    load = staticmethod(load_cifar10)


# Segmentation sets live in their own module, which registers them here.
from . import camvid  # noqa: E402,F401  (after DATASETS exists: camvid imports it)
