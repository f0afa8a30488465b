"""Writing PNGs with their generation metadata, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError, OutputError
from multidiffusion.pipeline.files.atomic import fitting_name, name_max, ordinary_mode, write_atomically
from multidiffusion.pipeline.files.gpano import XMP_KEY
from multidiffusion.pipeline.settings.recipe import METADATA_KEY

__all__ = ["METADATA_KEY", "check_output_path", "save_png"]


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """The output must be a ``.png`` file whose folder exists and is writable, or can be made (its nearest existing
    ancestor a writable folder: :func:`save_png` makes the missing ones when it writes, so a run that fails first
    leaves nothing behind), each name within the file system's limit in bytes (checked before any model loads)."""
    out = Path(path).expanduser()
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"output {str(path)!r} must end in .png")
    folder = out.parent if str(out.parent) else Path(".")
    existing, missing = _nearest_existing(folder)
    for name in [*missing, out.name]:
        size, limit = len(os.fsencode(name)), name_max(existing)
        if size > limit:
            raise InvalidInputError(
                f"output name {_short(name)!r} is {size} bytes; a file name may have at most {limit} bytes"
            )
    try:
        if out.is_dir():
            raise InvalidInputError(f"output {str(path)!r} is a folder; give a file name ending in .png")
        if not existing.is_dir():
            base = _short(str(existing), 200)
            raise InvalidInputError(
                f"output folder {_short(str(folder), 200)!r} cannot be made: {base!r} is not a folder"
            )
        usable = os.access(existing, os.W_OK | os.X_OK)
        writable = usable and (not out.exists() or os.access(out, os.W_OK))
    except OSError as exc:  # a path past PATH_MAX, a loop of links: the system's reason is the message
        raise InvalidInputError(f"output {_short(str(path))!r}: {exc.strerror or exc}") from None
    if missing and not usable:
        raise InvalidInputError(
            f"output folder {_short(str(folder), 200)!r} does not exist and cannot be made: "
            f"{_short(str(existing), 200)!r} is not writable"
        )
    if not writable:
        raise InvalidInputError(f"output {str(path)!r} is not writable")
    return out


def _nearest_existing(folder: Path) -> tuple[Path, list[str]]:
    """The nearest of ``folder`` and its ancestors that exists (a link counts, dangling or not), and the names of
    the folders below it still to be made, outermost first."""
    missing: list[str] = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.insert(0, folder.name)
        folder = folder.parent
    return folder, missing


def _short(text: str, keep: int = 60) -> str:
    """``text`` cut to ``keep`` characters for a message (an ellipsis where it was cut)."""
    return text if len(text) <= keep else text[: keep - 1] + "…"


def _write(image: Any, out: Path, info: Any) -> None:
    """Write the PNG atomically, with the permissions an ordinary write would give it."""
    write_atomically(out, lambda f: image.save(f, format="PNG", pnginfo=info), mode=ordinary_mode(out))


def save_png(image: Any, path: str | os.PathLike[str], text: dict[str, str], xmp: str | None = None) -> None:
    """Save a PIL image with text chunks, atomically: written to a temporary file beside it, then renamed. Missing
    folders on its path are made first.

    The file gets the permissions an ordinary write would give it (the umask's, or the replaced file's).
    Values longer than 1 KiB go into compressed ``iTXt`` chunks (the JSON of a region layout with masks). ``xmp``, an
    XMP packet (:func:`~multidiffusion.pipeline.files.gpano.gpano_xmp`), goes uncompressed into the ``iTXt`` chunk
    XMP readers look for.

    Raises:
        OutputError: the file cannot be written (a folder that turned read-only, a full disk). The image is not
            lost: it is written to the temporary folder instead, and the message says where.
    """
    from PIL.PngImagePlugin import PngInfo

    out = Path(path)
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value, zip=True) if len(value) > 1024 else info.add_text(key, value)
    if xmp is not None:
        info.add_itxt(XMP_KEY, xmp, zip=False)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # as check_output_path allowed; the umask sets its mode
        _write(image, out, info)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        spare = Path(tempfile.gettempdir())
        rescue = spare / fitting_name(f"multidiffusion-unsaved-{os.getpid()}-", out.stem, out.suffix, name_max(spare))
        try:
            _write(image, rescue, info)
        except OSError:
            raise OutputError(f"cannot write {str(path)!r} ({reason}); the image could not be saved anywhere") from exc
        raise OutputError(f"cannot write {str(path)!r} ({reason}); the image was saved to {rescue} instead") from exc
