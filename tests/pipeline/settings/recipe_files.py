"""Hand-made PNGs and zlib streams for the recipe tests: a PNG's chunks written one by one (so a test can put any
recipe, any text chunk and any declared pixel count in it), and the zlib stream of gigabytes of zeros made in about
a second."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def itxt(key: str, text: str, compressed: bool = True) -> bytes:
    """An ``iTXt`` chunk (UTF-8), deflated as this package writes recipes."""
    body = zlib.compress(text.encode(), 9) if compressed else text.encode()
    return chunk(b"iTXt", key.encode("latin-1") + b"\0" + bytes([int(compressed), 0]) + b"\0\0" + body)


def ztxt(key: str, deflated: bytes) -> bytes:
    """A ``zTXt`` chunk holding already deflated Latin-1 text."""
    return chunk(b"zTXt", key.encode("latin-1") + b"\0\0" + deflated)


def write_png(path: Path, chunks: list[bytes], size: tuple[int, int] = (2, 2)) -> Path:
    """A 1-bit grey PNG of ``size`` (width, height) px, all black, with ``chunks`` before its image data."""
    width, height = size
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    rows = height * (1 + (width + 7) // 8)
    pixels = zlib.compressobj(1)
    data = b"".join(pixels.compress(bytes(min(rows - i, 1 << 26))) for i in range(0, rows, 1 << 26)) + pixels.flush()
    path.write_bytes(SIGNATURE + header + b"".join(chunks) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def png_with_recipe(path: Path, recipe: dict[str, Any] | str, size: tuple[int, int] = (2, 2)) -> Path:
    """A PNG whose ``multidiffusion`` chunk holds ``recipe`` (a dict, or the text as it is)."""
    text = recipe if isinstance(recipe, str) else json.dumps(recipe)
    return write_png(path, [itxt("multidiffusion", text)], size)


def zeros_zlib(size: int, segment: int = 1 << 26) -> bytes:
    """A zlib stream that inflates to ``size`` zero bytes (a multiple of ``segment``), about ``size / 1000`` bytes.

    Each segment is deflated after a full flush, which resets the compressor, so every segment's bytes are the
    same and only two are compressed; the trailer is the Adler-32 of ``size`` zeros (a = 1, b = size mod 65521).
    """
    assert size % segment == 0 and size >= 2 * segment
    deflate = zlib.compressobj(9)
    first = deflate.compress(bytes(segment)) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(bytes(segment)) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)[:-4]
    assert first[2:] == again  # the header, then identical segments
    return first + again * (size // segment - 1) + end + struct.pack(">I", (size % 65521) << 16 | 1)
