"""Oxford-IIIT Pet as pet / background segmentation (torchvision downloads it when online);
the trimaps' border becomes VOID, and `data.val_size` images of trainval are held out."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .base import DATASETS, VOID, Dataset, Split
from .cache import cached_tensors
from .fingerprint import source_key
from .camvid import SegmentationSet, check_size, resize_pair
from .splits import channel_stats, split_train

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
    key = source_key("pets", base, [folder / "images", folder / "annotations"])

    def read() -> dict[str, Tensor]:
        tensors = {}
        for split in ("trainval", "test"):
            tensors[f"{split}_x"], tensors[f"{split}_y"] = _read_pets(_open_pets(base, split), size)
        return tensors

    t = cached_tensors(cache_dir, f"pets-{key}-{size[0]}x{size[1]}.pt", read, len(PETS_CLASSES))
    trainval = Split(t["trainval_x"], t["trainval_y"])
    if not val_size:
        raise ConfigError("data.val_size", "must be at least 1: Oxford-IIIT Pet has no validation split of its own")
    train, val = split_train(trainval, val_size, subset, split_seed)
    mean, std = channel_stats(train.images)
    return Dataset("pets", train, val, Split(t["test_x"], t["test_y"]), PETS_CLASSES, mean, std,
                   str(base.resolve()))


@DATASETS.register("pets", "Oxford-IIIT Pet (torchvision, online): pet / background, trimap border void")
class Pets(SegmentationSet):
    classes, palette = PETS_CLASSES, PETS_PALETTE
    load = staticmethod(load_pets)
