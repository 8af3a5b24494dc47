"""Fetching a data set's archive and unpacking it, with the standard library only
(urllib, hashlib, tarfile), so that what happens is ours and testable.

`fetch_and_unpack` leaves either the complete folder or nothing: the archive is
streamed into a hidden temporary file beside its target while its md5 is computed,
unpacked into a hidden temporary folder, checked, and the data set's folder is then
renamed into place in one step, so a half-unpacked folder is never mistaken for the
data. The archive is deleted afterwards. On any failure, Ctrl-C included, everything
it created goes again: the temporary file and folder, and the target folder's parents
where it made them. Failures come out as `DownloadFailed` with a one-line reason;
Ctrl-C stays a KeyboardInterrupt.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Sequence

log = logging.getLogger("sampler")

CONNECT_TIMEOUT_S = 15  # seconds without an answer (to connect, or between two reads) before giving up
CHUNK = 1 << 20


class DownloadFailed(Exception):
    """The archive could not be fetched, checked or unpacked; `reason` says why, in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def fetch_and_unpack(url: str, md5: str | None, root: Path, folder: str, expect: Sequence[str] = (),
                     what: str = "data", timeout: float | None = None) -> Path:
    """Download the tar archive at `url` (checked against `md5` unless it is None) and
    unpack it into `root`; the archive must hold `folder/` and nothing else, with every
    file of `expect` inside it. Returns `root/folder`."""
    root, timeout = Path(root), CONNECT_TIMEOUT_S if timeout is None else timeout
    created = _make_dirs(root)
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    part = root / f".{_archive_name(url)}.{token}.part"
    unpacked = root / f".{folder}.{token}.part"
    target = root / folder
    try:
        try:
            _download(url, part, md5, timeout, what)
            _unpack(part, unpacked, folder)
            missing = [name for name in expect if not (unpacked / folder / name).is_file()]
            if missing:
                raise DownloadFailed(f"the archive has no {folder}/{missing[0]}")
            try:
                os.rename(unpacked / folder, target)
            except OSError as e:
                if not (expect and all((target / name).is_file() for name in expect)):  # another job's copy
                    raise DownloadFailed(f"cannot move the unpacked files to {target} ({e.strerror or e}); "
                                         "if that folder exists, move it away") from e
        finally:
            part.unlink(missing_ok=True)
            shutil.rmtree(unpacked, ignore_errors=True)
    except BaseException as e:
        for path in reversed(created):
            try:
                path.rmdir()  # only empty folders: never anything someone else put there
            except OSError:
                break
        if isinstance(e, DownloadFailed) or not isinstance(e, Exception):  # Ctrl-C stays Ctrl-C
            raise
        raise DownloadFailed(_describe(e, timeout)) from e
    log.info("unpacked %s into %s", what, target.resolve())
    return target


def _make_dirs(root: Path) -> list[Path]:
    """mkdir -p root; the folders it made, outermost first."""
    missing = []
    path = root.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadFailed(f"cannot create {root}: {e.strerror or e}") from e
    return missing[::-1]


def _archive_name(url: str) -> str:
    return PurePosixPath(urllib.parse.urlparse(url).path).name or "download"


def _download(url: str, dest: Path, md5: str | None, timeout: float, what: str) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "sampler"})
    log.info("downloading %s from %s into %s", what, url, dest.parent.resolve())
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        seen = 0
        with _Progress(what, total) as progress:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                seen += len(chunk)
                progress.advance(len(chunk))
    if total is not None and seen != total:
        raise DownloadFailed(f"the connection closed after {seen} of {total} bytes")
    if md5 and digest.hexdigest() != md5.strip().lower():
        raise DownloadFailed(f"checksum mismatch: the file's md5 is {digest.hexdigest()}, "
                             f"not the expected {md5} (data.md5)")
    log.info("downloaded %s (%.0f MB in %.0f s), md5 %s", what, seen / 1e6, time.perf_counter() - start,
             "verified" if md5 else "not checked (data.md5 is null)")


class _Progress:
    """A rich download bar on a terminal (stderr), nothing otherwise (the log has a line)."""

    def __init__(self, what: str, total: int | None):
        self.bar = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.bar = Progress(TextColumn(f"downloading {what}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                                console=Console(stderr=True))
            self.task = self.bar.add_task("download", total=total)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _unpack(archive: Path, dest: Path, folder: str) -> None:
    """Extract the tar archive into dest, refusing anything but plain files and folders under `folder/`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if (not parts or parts[0] != folder or ".." in parts or m.name.startswith("/")
                        or not (m.isfile() or m.isdir())):
                    raise DownloadFailed(f"the archive holds {m.name!r}; expected only {folder}/ "
                                         "with plain files")
            dest.mkdir()
            if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8-3.11 security releases
                tar.extractall(dest, members=members, filter="data")
            else:  # the checks above are the filter
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as e:
        raise DownloadFailed(f"not a readable tar archive: {e}") from e


def _describe(e: Exception, timeout: float) -> str:
    """A few words for the error message: what went wrong, without a traceback."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, Exception):
            return str(e.reason)
        e = e.reason
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host: {e.strerror or e}"
    if isinstance(e, http.client.HTTPException):  # IncompleteRead, RemoteDisconnected, a garbled answer
        return f"the connection broke: {type(e).__name__}"
    if isinstance(e, ValueError):  # urllib: "unknown url type"
        return str(e)
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return f"{type(e).__name__}: {e}"
