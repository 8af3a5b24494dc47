"""The decoded-tensor cache: a data set is decoded once into a tensor file in
sampler's own cache folder (never beside the source, which may be read-only), named
by a key made from the source's path and file stats, so a changed source is re-read."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..errors import WriteError
from ..runs.atomic import save_torch

log = logging.getLogger("sampler")


def default_cache_dir() -> Path:
    base = os.environ.get("SAMPLER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sampler")
    return Path(base)


def cache_root(cache_dir: str | Path | None) -> Path:
    """`data.cache_dir`, or the default when it is null."""
    return Path(cache_dir or default_cache_dir()).expanduser()


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
    except WriteError as e:  # a full or read-only cache disk only costs the next run a re-decode
        log.warning("could not cache the decoded data in %s (%s); training goes on from memory, and the "
                    "next run decodes the data again. Set data.cache_dir (or SAMPLER_CACHE) to a writable "
                    "folder with room for it to keep a cache", e.key, e.message)
    return tensors
