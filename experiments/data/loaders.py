"""Batches from in-memory uint8 tensors, augmented as whole batches on the training
device: no per-image PIL transforms, no worker processes (DESIGN §6)."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sampler.blocks.registry import Registry

from ..errors import ConfigError
from .base import VOID, Split

FLIPS: Registry = Registry("flip mode")
for _name, _help in (("false", "no horizontal flip"), ("true", "each image mirrored at random, anew every epoch"),
                     ("alternate", "airbench's alternating flip: a random half mirrored in epoch 1, then every "
                                   "image mirrored in every other epoch (classification)")):
    FLIPS.register(_name, _help)(lambda x: x)


def flip_mode(flip: Any) -> str:
    """`data.augment.flip` as its registered name (true, false, alternate), checked."""
    name = str(flip).lower() if isinstance(flip, bool) else flip
    if not isinstance(name, str) or name not in FLIPS:
        raise ConfigError("data.augment.flip", f"{flip!r}; choose one of: {', '.join(FLIPS.names())}")
    return name


class TensorLoader:
    """Batches from in-memory uint8 tensors, augmented as whole batches.

    Random crop (reflect-padded by `crop_padding` pixels) and horizontal flip run
    on uint8 before the float conversion, on the training device. The seeded
    `generator` fixes both the data order and the augmentation.

    `flip="alternate"` (airbench): a random half of the images, drawn once, is mirrored
    in even-numbered passes (from 0) and the other half in odd ones, so every image is
    seen both ways in any two consecutive epochs. `epoch` counts the passes begun; a
    resumed run sets it to the epochs already done.
    """

    def __init__(self, split: Split, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device, *, shuffle: bool = False, crop_padding: int = 0,
                 flip: bool | str = False, drop_last: bool = False, channels_last: bool = False,
                 generator: torch.Generator | None = None):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle, self.crop_padding = shuffle, crop_padding
        mode = flip_mode(flip)
        self.flip = mode == "true"  # the random flip of `augment`
        self.drop_last = drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator or torch.Generator()
        self.device = device
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape) * 255
        self.std = torch.tensor(std, device=device).view(shape) * 255
        self.epoch = 0
        # alternate: the images mirrored in even passes, drawn once
        self.mirrored = self._rand(len(self.labels), high=2).bool() if mode == "alternate" else None

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        odd = self.epoch % 2 == 1
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.augment(self.images[idx], self.labels[idx])
            if self.mirrored is not None:
                x = torch.where((self.mirrored[idx] ^ odd).view(-1, 1, 1, 1), x.flip(3), x)
            x = (x.float() - self.mean) / self.std
            yield x.contiguous(memory_format=self.memory_format), y

    def sample(self, n: int) -> Tensor:
        """Up to `n` images spread evenly over the split, normalised but not augmented
        (what `model.whiten` is fitted to; drawing no random numbers)."""
        index = torch.linspace(0, len(self.labels) - 1, min(n, len(self.labels)), device=self.device).long()
        return ((self.images[index].float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One batch's images and labels as the model sees them, before normalisation
        (the alternating flip, which needs the images' indices, comes after it)."""
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


class SegmentationLoader(TensorLoader):
    """TensorLoader for image/mask pairs. In training, one random affine warp per image:
    zoom by a factor drawn from `scale`, a window of `crop` (height, width) pixels at a
    random place, a mirror with `flip`; bilinear for the image and nearest for the mask,
    and whatever the window takes from outside the image is void."""

    def __init__(self, split: Split, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device, *, crop: Sequence[int] | None = None, scale: Sequence[float] = (1.0, 1.0),
                 flip: bool = False, **kwargs: Any):
        if flip_mode(flip) == "alternate":
            raise ConfigError("data.augment.flip", "alternate is for classification; a segmentation run "
                              "takes true or false")
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
