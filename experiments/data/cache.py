"""The decoded-tensor cache: a data set is decoded once into a tensor file in
sampler's own cache folder (never beside the source, which may be read-only), named
by a key made from the source's path and file stats, so a changed source is re-read.

A cache file is checked on load as the readers write it (`<split>_x` uint8 N×C×H×W
images, `<split>_y` integer labels or H×W masks, labels in range): a file that fails
is rebuilt, with one warning naming it. No checksum: hashing 150 MB would cost every
run's start-up about what the file saves, and the checks catch what breaks training."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..errors import WriteError
from ..runs.atomic import save_torch
from .base import VOID

log = logging.getLogger("sampler")

CACHE_DIR = "data.cache_dir=... or SAMPLER_CACHE"  # the settings that move the cache, for a write error's hint


def default_cache_dir() -> Path:
    base = os.environ.get("SAMPLER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sampler")
    return Path(base)


def cache_root(cache_dir: str | Path | None) -> Path:
    """`data.cache_dir`, or the default when it is null."""
    return Path(cache_dir or default_cache_dir()).expanduser()


def cached_tensors(cache_dir: str | Path | None, name: str, read: Callable[[], dict[str, Tensor]],
                   num_classes: int) -> dict[str, Tensor]:
    """`read()` once; later calls load the tensor file `name` from the cache folder.
    `num_classes`: labels and masks hold 0..num_classes-1 (masks VOID too)."""
    cache = cache_root(cache_dir) / name
    if cache.is_file():
        try:
            tensors = torch.load(cache, weights_only=True)
            problem = check_tensors(tensors, num_classes)
        except Exception as e:
            problem = f"it cannot be read: {type(e).__name__}: {e}"
        if problem is None:
            return tensors
        # a stale or damaged cache is rebuilt, never trusted
        log.warning("the cached data %s is damaged (%s); decoding the data again to replace it", cache, problem)
        cache.unlink(missing_ok=True)
    tensors = read()
    try:
        save_torch(cache, tensors, where=CACHE_DIR)
    except WriteError as e:  # a full or read-only cache disk only costs the next run a re-decode
        log.warning("could not cache the decoded data in %s (%s); training goes on from memory, and the "
                    "next run decodes the data again", e.key, e.message)
    return tensors


def check_tensors(tensors: object, num_classes: int) -> str | None:
    """What is wrong with a loaded cache file, or None: cheap checks of dtype, shape and
    label range, the faults that would otherwise surface mid-training as a traceback
    that never names the file."""
    if not isinstance(tensors, dict) or not tensors:
        return f"it holds a {type(tensors).__name__}, not the splits' tensors"
    splits = sorted({key.rsplit("_", 1)[0] for key in tensors})
    sizes = set()
    for split in splits:
        x, y = tensors.get(f"{split}_x"), tensors.get(f"{split}_y")
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            return f"{split} lacks its images ({split}_x) or labels ({split}_y)"
        if x.dtype != torch.uint8 or x.ndim != 4:
            return f"{split}_x is {x.dtype} of shape {tuple(x.shape)}, not uint8 N x C x H x W images"
        sizes.add(tuple(x.shape[1:]))
        masks = y.ndim == 3
        if y.dtype.is_floating_point or y.dtype == torch.bool or len(y) != len(x) \
                or not (y.ndim == 1 or masks and y.shape[1:] == x.shape[2:]):
            return (f"{split}_y is {y.dtype} of shape {tuple(y.shape)}, not integer labels or masks for "
                    f"{split}_x's {tuple(x.shape)}")
        bad = (y < 0) | (y >= num_classes)
        if masks:
            bad &= y != VOID
        if bad.any():
            return (f"{split}_y holds label {y[bad][0].item()}, outside 0-{num_classes - 1}"
                    + (f" and {VOID} (void)" if masks else ""))
    if len(sizes) > 1:
        return f"its splits' images differ in size: {sorted(sizes)}"
    return None
