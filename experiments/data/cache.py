"""The decoded-tensor cache: a data set is decoded once into a tensor file in
sampler's own cache folder (never beside the source, which may be read-only), named
by a key made from the source's path and file stats, so a changed source is re-read."""
from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

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


def source_key(kind: str, path: Path, entries: Iterable[Path]) -> str:
    """A fingerprint of the source: its resolved path and the name, size and mtime of every
    file in `entries` (folders are walked), so that any changed, added or removed file
    (an image edited in place included) is read again. 60,000 files take about 0.2 s: a
    stat each, which is most of it."""
    h = hashlib.sha1(f"{kind}:{path.resolve()}".encode())
    for p in sorted(entries):
        if p.is_dir():
            lines: list[str] = []
            _folder_lines(str(p), p.name + "/", lines)
            h.update("".join(lines).encode())
        else:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _folder_lines(folder: str, prefix: str, lines: list[str]) -> None:
    """`name:size:mtime` lines of every file below `folder`, by name, named from `prefix`.
    One stat per entry, relative to the open folder where the OS allows it, so that each
    looks up one name rather than the whole path (a third less time on Linux)."""
    fd = os.open(folder, os.O_RDONLY) if _STAT_DIR_FD else None
    try:
        for name in sorted(os.listdir(folder if fd is None else fd)):
            st = os.stat(name, dir_fd=fd) if fd is not None else os.stat(os.path.join(folder, name))
            if stat.S_ISDIR(st.st_mode):
                _folder_lines(os.path.join(folder, name), f"{prefix}{name}/", lines)
            else:
                lines.append(f"{prefix}{name}:{st.st_size}:{st.st_mtime_ns}\n")
    finally:
        if fd is not None:
            os.close(fd)


_STAT_DIR_FD = os.stat in os.supports_dir_fd and os.listdir in os.supports_fd


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
