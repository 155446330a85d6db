"""Temporary files of batch runs: written beside their output, held under a lock, swept when orphaned.

A run writes each output in a hidden staging folder beside it (`.NAME.staging`), where no dataset
reader of the output looks, and renames it into place when the run commits. Every temporary file
or folder is held under an exclusive flock(2) while its run lives. The kernel drops that lock when
the process ends, however it ends (SIGKILL included), so the next run of the same output removes
the temporaries whose lock it can take, and leaves alone those of a run still writing. Locks are
those of one machine: runs on two hosts writing one output over a network filesystem are not told
apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def staging_folder(target: Path) -> Path:
    """The hidden folder beside `target` (a file or a folder) where its temporaries are written."""
    target = target.absolute()
    return target.parent / f".{target.name}.staging"


class Claim:
    """A temporary file or folder, locked by this process until it is moved into place or dropped."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    def commit_to(self, target: Path) -> None:
        """Rename the temporary over `target` (atomic on one filesystem) and release it."""
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        self._release()

    def discard(self) -> None:
        """Delete the temporary and release it; doing so twice is harmless."""
        if self._descriptor is None:
            return
        _remove(self.path)
        self._release()

    @property
    def held(self) -> bool:
        """Whether the temporary is still this run's (neither committed nor discarded)."""
        return self._descriptor is not None

    def _release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        with contextlib.suppress(OSError):  # the staging folder goes once it is empty
            self.path.parent.rmdir()


def claim_file(folder: Path, prefix: str) -> Claim:
    """A new empty file in `folder` (created if need be), locked for this run."""

    def make() -> str:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
        os.close(handle)
        return name

    return _claim(folder, make)


def claim_folder(folder: Path, prefix: str) -> Claim:
    """A new empty folder in `folder` (created if need be), locked for this run."""
    return _claim(folder, lambda: tempfile.mkdtemp(prefix=prefix, dir=folder))


def sweep(folder: Path) -> list[Path]:
    """Remove the temporaries in `folder` whose runs have ended; return what was removed."""
    try:
        entries = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = [path for path in entries if _remove_if_orphaned(path)]
    with contextlib.suppress(OSError):
        folder.rmdir()
    return removed


def _claim(folder: Path, make: Callable[[], str]) -> Claim:
    """Create and lock a temporary; if a sweep removed it before the lock was taken, start over."""
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = Path(make())
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # a sweep removed the (empty) folder or the new entry meanwhile
            continue
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if _same_file(descriptor, path):
            return Claim(path, descriptor)
        os.close(descriptor)


def _remove_if_orphaned(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its run is still going
            return False
        if not _same_file(descriptor, path):
            return False
        _remove(path)
        return True
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether `path` still names the file open as `descriptor`."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
