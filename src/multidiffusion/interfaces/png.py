"""Writing PNGs with their generation metadata, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError

METADATA_KEY = "multidiffusion"


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """The output must be a ``.png`` file in an existing, writable folder (checked before any model loads)."""
    out = Path(path).expanduser()
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"output {str(path)!r} must end in .png")
    if out.is_dir():
        raise InvalidInputError(f"output {str(path)!r} is a folder; give a file name ending in .png")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidInputError(f"output folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InvalidInputError(f"output {str(path)!r} is not writable")
    return out


def save_png(image: Any, path: str | os.PathLike[str], text: dict[str, str]) -> None:
    """Save a PIL image with tEXt chunks; written to a temporary file beside it, then renamed."""
    from PIL.PngImagePlugin import PngInfo

    out = Path(path)
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
