"""Writing PNGs with their generation metadata, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError, OutputError
from multidiffusion.pipeline.settings.recipe import METADATA_KEY

__all__ = ["METADATA_KEY", "NAME_MAX", "check_output_path", "name_max", "save_png"]


NAME_MAX = 255  # bytes in one file name on the usual Linux and macOS file systems; a folder may report fewer
_RANDOM_PART = "abcdefgh.tmp"  # what ``tempfile.mkstemp`` adds to a prefix: 8 random characters, then the suffix


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (:data:`NAME_MAX` where it does not
    say)."""
    try:
        return min(NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the folder does not tell
        return NAME_MAX


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """The output must be a ``.png`` file in an existing, writable folder, its name within the file system's
    limit in bytes (checked before any model loads)."""
    out = Path(path).expanduser()
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"output {str(path)!r} must end in .png")
    folder = out.parent if str(out.parent) else Path(".")
    size, limit = len(os.fsencode(out.name)), name_max(folder)
    if size > limit:
        raise InvalidInputError(
            f"output name {_short(out.name)!r} is {size} bytes; a file name may have at most {limit} bytes"
        )
    try:
        if out.is_dir():
            raise InvalidInputError(f"output {str(path)!r} is a folder; give a file name ending in .png")
        if not folder.is_dir():
            raise InvalidInputError(f"output folder {str(folder)!r} does not exist")
        writable = os.access(folder, os.W_OK | os.X_OK) and (not out.exists() or os.access(out, os.W_OK))
    except OSError as exc:  # a path past PATH_MAX, a loop of links: the system's reason is the message
        raise InvalidInputError(f"output {_short(str(path))!r}: {exc.strerror or exc}") from None
    if not writable:
        raise InvalidInputError(f"output {str(path)!r} is not writable")
    return out


def _short(text: str, keep: int = 60) -> str:
    """``text`` cut to ``keep`` characters for a message (an ellipsis where it was cut)."""
    return text if len(text) <= keep else text[: keep - 1] + "…"


def _ordinary_mode(out: Path) -> int:
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


def _fitting(prefix: str, name: str, rest: str, limit: int) -> str:
    """``prefix + name + rest`` with ``name`` cut, whole characters from its end, until it has at most ``limit``
    bytes."""
    name = name[: max(limit, 0)]  # a character is at least one byte
    while name and len(os.fsencode(prefix + name + rest)) > limit:
        name = name[:-1]
    return prefix + name + rest


def _temp_name(out: Path) -> str:
    """A hidden prefix for a temporary name beside ``out``: with the random part ``mkstemp`` adds, it stays within
    the file system's name limit in bytes whatever ``out``'s length."""
    return _fitting(".", out.name, ".", name_max(out.parent) - len(_RANDOM_PART))


def _write(image: Any, out: Path, info: Any) -> None:
    """Write atomically: a temporary file beside ``out``, then renamed over it; nothing is left on failure."""
    mode = _ordinary_mode(out)
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(out), suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(image: Any, path: str | os.PathLike[str], text: dict[str, str]) -> None:
    """Save a PIL image with text chunks, atomically: written to a temporary file beside it, then renamed.

    The file gets the permissions an ordinary write would give it (the umask's, or the replaced file's).
    Values longer than 1 KiB go into compressed ``iTXt`` chunks (the JSON of a region layout with masks).

    Raises:
        OutputError: the file cannot be written (a folder that turned read-only, a full disk). The image is not
            lost: it is written to the temporary folder instead, and the message says where.
    """
    from PIL.PngImagePlugin import PngInfo

    out = Path(path)
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value, zip=True) if len(value) > 1024 else info.add_text(key, value)
    try:
        _write(image, out, info)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        spare = Path(tempfile.gettempdir())
        rescue = spare / _fitting(f"multidiffusion-unsaved-{os.getpid()}-", out.stem, out.suffix, name_max(spare))
        try:
            _write(image, rescue, info)
        except OSError:
            raise OutputError(f"cannot write {str(path)!r} ({reason}); the image could not be saved anywhere") from exc
        raise OutputError(f"cannot write {str(path)!r} ({reason}); the image was saved to {rescue} instead") from exc
