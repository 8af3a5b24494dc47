"""The decoded-tensor cache: a data set is decoded once into a tensor file in
sampler's own cache folder (never beside the source, which may be read-only), named
by a key made from the source's path and file stats, so a changed source is re-read."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor

from ..runs.atomic import save_torch


def default_cache_dir() -> Path:
    base = os.environ.get("SAMPLER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sampler")
    return Path(base)


def cache_root(cache_dir: str | Path | None) -> Path:
    """`data.cache_dir`, or the default when it is null."""
    return Path(cache_dir or default_cache_dir()).expanduser()


def source_key(kind: str, path: Path, entries: Iterable[Path]) -> str:
    """Cheap fingerprint: resolved path plus name, size (entries of a folder) and mtime of `entries`."""
    h = hashlib.sha1(f"{kind}:{path.resolve()}".encode())
    for p in sorted(entries):
        st = p.stat()
        n = len(os.listdir(p)) if p.is_dir() else st.st_size
        h.update(f"{p.name}:{n}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


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
