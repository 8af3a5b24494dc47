"""The one image decoder (torchvision.io: 5x faster than PIL), and ImageFolder trees."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import IMAGE_SUFFIXES


def decode(file: Path, labels: bool = False) -> Tensor:
    """An image file as uint8 C x H x W RGB; with `labels`, an 8-bit label image as
    H x W class indices (gray, or RGB with equal channels)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    what = "label image" if labels else "image"
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of torchcodec, which
            # is not a dependency here; they still work.
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(read_file(str(file)), mode=ImageReadMode.UNCHANGED if labels else ImageReadMode.RGB)
    except RuntimeError as e:
        raise ConfigError("data.root", f"cannot decode {what} {file} ({e}). The file is corrupt or "
                          "not an image: replace it, delete it, or point data.root at a good copy") from e
    if not labels:
        return image
    if image.shape[0] != 1 and not (image[:3] == image[:1]).all():
        raise ConfigError("data.root", f"{file} is a colour image; labels must be 8-bit class indices "
                          "(SegNet's *annot folders), not colour-coded masks")
    return image[0]


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
        if not files:  # training on the other classes would shrink every split without a word
            raise ConfigError("data.root", f"{split_dir / name} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                              "every class folder needs its images. Restore them, or point data.root at a "
                              "complete copy")
        images += [decode(f) for f in files]
        labels += [label] * len(files)
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise ConfigError("data.root", f"images in {split_dir} differ in size ({sorted(shapes)[:3]}); "
                          "this reader expects one size per data set")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes
