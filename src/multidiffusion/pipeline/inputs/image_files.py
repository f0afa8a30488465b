"""Reading image files the user names (inputs, masks, images to evaluate): capped, and one clear line on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError

MAX_IMAGE_PX = 2**27  # 134 Mpx (16384 × 8192): the most pixels an input image, a mask or an evaluated image may have


def open_image(path: str | Path, what: str, mode: str, where: str = "") -> Any:
    """An image file converted to ``mode`` (a loaded PIL image); at most :data:`MAX_IMAGE_PX` pixels, checked from
    the header before any pixel is decoded (a decompression bomb is refused, not decoded); one line otherwise.
    ``where`` prefixes the messages (``regions[1].mask: ``)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    name = f"{where}cannot read {what} {str(path)!r}"
    limit = f"the limit is {MAX_IMAGE_PX:,} px ({MAX_IMAGE_PX / 1e6:.0f} Mpx)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PX:
                    raise InvalidInputError(f"{name}: it is {width}×{height} px; {limit}")
                if width * height == 0:
                    raise InvalidInputError(f"{name}: it has no pixels ({width}×{height})")
                return _eight_bit(image, name).convert(mode)
    except Image.DecompressionBombError as exc:
        raise InvalidInputError(f"{name}: it has too many pixels; {limit}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidInputError(f"{name}: not an image file PIL can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # missing, truncated or corrupt files
        reason = (
            exc.strerror
            if isinstance(exc, OSError) and exc.strerror
            else str(exc).splitlines()[0]
            if str(exc)
            else type(exc).__name__
        )
        raise InvalidInputError(f"{name}: {reason}") from exc


def _eight_bit(image: Any, name: str) -> Any:
    """16-bit greyscale (PNG's ``I;16``, or ``I`` holding 0…65535) scaled to 8 bits, since PIL's ``convert`` clips
    such values rather than scaling them (a mid-grey 16-bit mask would turn white); other modes as they are."""
    import numpy as np
    from PIL import Image

    if image.mode == "F":
        raise InvalidInputError(f"{name}: 32-bit float images are not supported; save it with 8 or 16 bits per channel")
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if float(values.min(initial=0)) < 0 or float(values.max(initial=0)) > 65535:
        raise InvalidInputError(f"{name}: its 32-bit values are outside 0…65535; save it with 8 or 16 bits per channel")
    return Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")
