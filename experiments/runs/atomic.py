"""Atomic file writes (DESIGN §4): a killed run never leaves a half-written file
that looks complete, because readers only ever see the old or the new file."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..errors import WriteError


# The setting that moves a run's files (metrics.json, checkpoints) elsewhere.
RUN_DIR = "hydra.run.dir=... or hydra.sweep.dir=..."
# Errors of a folder the user must make writable or replace; free space would not help.
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _atomic(path: Path, write: Callable[[str], None], io_errors: tuple[type[BaseException], ...] = (OSError,),
            where: str = RUN_DIR) -> None:
    """Write into a temporary file beside `path`, then rename it over `path`. A failed
    write removes the temporary file and leaves `path` as it was; a full or unwritable
    disk becomes a `WriteError` that names the path, the free space and `where`, the
    setting that puts the file elsewhere. The temporary file's name says which process
    writes it (`.NAME.HOST.PID.*.tmp`), so that one a killed writer left behind is removed
    by the next write of `path` (`_remove_stale_temps`)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with _ctrl_c_deferred():
            write(tmp)
            os.replace(tmp, path)
    except BaseException as e:
        free = free_mb(path)  # before the partial file goes: what the write left free
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, io_errors):
            raise write_error(path, e, free, where) from e
        raise


_HOST = socket.gethostname()


def _remove_stale_temps(path: Path) -> None:
    """The temporary files of writers of `path` that were killed mid-write (kill -9, the OOM
    killer; a first cache decode left 52 MB): those named for a process of this host that is
    gone. Another process writing the same file now (parallel sweep jobs share the cache)
    keeps its file, as does one of another host, whose processes cannot be seen from here."""
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):  # a folder it cannot list or clean must not stop the write
        for name in os.listdir(path.parent):
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            # HOST.PID.RANDOM: mkstemp's random part has no dots, a host name may have some
            writer = name[len(prefix):-len(".tmp")].rsplit(".", 2)
            if len(writer) == 3 and writer[0] == _HOST and writer[1].isdigit() and not _alive(int(writer[1])):
                (path.parent / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Ctrl-C waits until the file is written (a checkpoint, the data cache: a second or
    two at most), then interrupts as usual. Raised inside torch.save's writer, the
    KeyboardInterrupt came out as a RuntimeError and was reported as a failed disk
    write, or, for the cache, as a warning while the run trained on. Only where Python's
    own handler is in place (the main thread; not under a handler of the caller's)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if caught:
            raise KeyboardInterrupt


def free_mb(path: Path) -> float | None:
    """Free space on the disk that holds `path` (or its nearest existing parent), in MB."""
    for folder in (Path(path), *Path(path).parents):
        try:
            return shutil.disk_usage(folder).free / 2**20
        except OSError:
            continue
    return None


def write_error(path: Path, error: BaseException, free: float | None = None, where: str = RUN_DIR) -> WriteError:
    """`where`: the setting that puts the file elsewhere, for the hint."""
    free = free_mb(path) if free is None else free
    space = f"{free:.1f} MB free there" if free is not None else "free space unknown"
    code = error.errno if isinstance(error, OSError) else None
    full = (code in (errno.ENOSPC, errno.EDQUOT) if isinstance(error, OSError)
            else free is not None and free < 1)  # torch.save's stream error says only "iostream error"
    reason = os.strerror(code) if code else "no space left on device" if full else str(error).splitlines()[0]
    # The errno first: a read-only disk has little free space too.
    hint = ("free some space on that disk" if code not in UNWRITABLE and (full or (free is not None and free < 64))
            else "make it writable")
    return WriteError(str(path), f"cannot write it: {reason} ({space}). To go on, {hint} or choose another "
                      f"folder ({where})")


def write_json(path: Path, data: Any, where: str = RUN_DIR) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    _atomic(path, write, where=where)


def write_text(path: Path, text: str, where: str = RUN_DIR) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text), where=where)


def save_torch(path: Path, obj: Any, where: str = RUN_DIR) -> None:
    def write(tmp: str) -> None:
        # Through a file object of ours, closed even when the disk fills up: torch's own
        # writer would keep the half-written file open (and its space taken) for as long as
        # the exception lives, and metrics.json could not be written after it.
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    # torch.save reports a full disk as a RuntimeError from its C++ stream ("iostream error").
    _atomic(path, write, io_errors=(OSError, RuntimeError), where=where)
