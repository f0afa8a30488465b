"""Writing a file atomically: a temporary file beside the target, then renamed over it, so that an interruption or a
full disk leaves either the old file or the new one, never a part; the temporary name always fits the file system."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

NAME_MAX = 255  # bytes in one file name on the usual Linux and macOS file systems; a folder may report fewer
_RANDOM_PART = "abcdefgh.tmp"  # what ``tempfile.mkstemp`` adds to a prefix: 8 random characters, then the suffix


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (:data:`NAME_MAX` where it does not
    say)."""
    try:
        return min(NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the folder does not tell
        return NAME_MAX


def fitting_name(prefix: str, name: str, rest: str, limit: int) -> str:
    """``prefix + name + rest`` with ``name`` cut, whole characters from its end, until it has at most ``limit``
    bytes."""
    name = name[: max(limit, 0)]  # a character is at least one byte
    while name and len(os.fsencode(prefix + name + rest)) > limit:
        name = name[:-1]
    return prefix + name + rest


def temp_prefix(out: Path) -> str:
    """A hidden prefix for a temporary name beside ``out``: with the random part ``mkstemp`` adds, it stays within
    the file system's name limit in bytes whatever ``out``'s length."""
    return fitting_name(".", out.name, ".", name_max(out.parent) - len(_RANDOM_PART))


def ordinary_mode(out: Path) -> int:
    """The permission bits an ordinary ``open(out, "w")`` would leave: the existing file's when it is
    replaced, else 0o666 less the process umask (``mkstemp`` alone would leave 0o600)."""
    try:
        return out.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (``os.umask`` sets as it reads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_atomically(
    path: Path, data: bytes | Callable[[BinaryIO], None], *, mode: int = 0o600, sync: bool = False
) -> None:
    """Write ``data`` (bytes, or a function writing to the open file) to a temporary file beside ``path``, then
    rename it over ``path``; on any failure (a full disk, Ctrl-C) the temporary file is removed and ``path`` is left
    as it was.

    Args:
        path: The target file; its folder must exist.
        data: The bytes, or a function given the open binary file.
        mode: The file's permission bits (default 0600: the owner's only; :func:`ordinary_mode` for what an
            ordinary write would give).
        sync: Flush the data to the disk before the rename, so a crash cannot leave the new name on an empty file.

    Raises:
        OSError: as the system raised it.
    """
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        try:
            if callable(data):
                with os.fdopen(os.dup(fd), "wb") as f:
                    data(f)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
