"""The recipe text of a PNG, read from its text chunks alone: no pixel is decoded.

Only the ``multidiffusion`` chunk is wanted, so the file's chunks are walked by their lengths and every other chunk
is skipped unread. A PNG of any pixel count, or one whose other text chunks are compressed bombs, costs no more than
its recipe; the recipe itself is inflated no further than :data:`MAX_RECIPE_BYTES`. PIL is not used for this: it
decodes text chunks it is not asked for, and refuses images over its pixel limit before any chunk is read.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.settings.recipe import METADATA_KEY
from multidiffusion.pipeline.settings.recipe_schema import MAX_RECIPE_BYTES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_KEY = METADATA_KEY.encode("latin-1")


def png_recipe_text(path: str | Path) -> str:
    """The text of the ``multidiffusion`` chunk of the PNG at ``path`` (the JSON recipe, not yet parsed).

    Raises:
        InvalidInputError: the file cannot be read, is not a PNG or holds no recipe, the chunk is damaged, or the
            recipe is longer than :data:`MAX_RECIPE_BYTES`.
    """
    shown = repr(Path(path).name)  # not the folder: the web UI's uploads live in server paths
    try:
        with open(path, "rb") as file:
            if file.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise InvalidInputError(f"{shown} is not a PNG, so it carries no multidiffusion recipe")
            text = _find_recipe(file, shown)
    except OSError as exc:
        raise InvalidInputError(f"cannot read image {shown}: {exc.strerror or exc}") from None
    if text is None:
        raise InvalidInputError(f"{shown} carries no multidiffusion recipe (only PNGs written by this package do)")
    return text


def _find_recipe(file: BinaryIO, shown: str) -> str | None:
    """Walk the chunks after the signature; the recipe's text, or None at the end of the file without one."""
    while True:
        header = file.read(8)
        if len(header) < 8:
            return None  # a file cut short after its last whole chunk: no recipe in what is there
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return None
        if kind in TEXT_CHUNKS:
            head = file.read(min(length, len(_KEY) + 1))
            if head != _KEY + b"\0":
                file.seek(length - len(head) + 4, 1)  # another text chunk: skipped, never inflated
                continue
            if length > MAX_RECIPE_BYTES:
                raise InvalidInputError(
                    f"{shown}: its recipe chunk is {length:,} bytes, more than the {MAX_RECIPE_BYTES >> 20} MiB a "
                    "recipe holds"
                )
            body = file.read(length - len(head))
            crc = file.read(4)
            if len(body) < length - len(head) or len(crc) < 4:
                raise InvalidInputError(f"cannot read image {shown}: the file ends inside its recipe chunk")
            if struct.unpack(">I", crc)[0] != zlib.crc32(kind + head + body):
                raise InvalidInputError(f"{shown}: its multidiffusion chunk is damaged (CRC mismatch)")
            return _chunk_text(kind, body, shown)
        file.seek(length + 4, 1)  # the data and the CRC, unread


def _chunk_text(kind: bytes, body: bytes, shown: str) -> str:
    """The text of a ``tEXt`` (Latin-1), ``zTXt`` (deflated Latin-1) or ``iTXt`` (UTF-8, maybe deflated) body."""
    try:
        if kind == b"tEXt":
            return body.decode("latin-1")
        if kind == b"zTXt":
            return _inflate(body[1:], shown).decode("latin-1")
        compressed, method = body[0], body[1]
        _language, _translated, text = body[2:].split(b"\0", 2)
        raw = _inflate(text, shown) if compressed else text
        if compressed and method != 0:
            raise InvalidInputError(f"{shown}: its multidiffusion chunk uses an unknown compression method")
        return raw.decode("utf-8")
    except InvalidInputError:
        raise
    except (IndexError, ValueError) as exc:  # a body without its separators, undecodable text
        raise InvalidInputError(f"{shown}: its multidiffusion chunk is malformed ({type(exc).__name__})") from None


def _inflate(data: bytes, shown: str) -> bytes:
    """Inflate at most :data:`MAX_RECIPE_BYTES`; more is refused without inflating it."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_RECIPE_BYTES + 1)
    except zlib.error:
        raise InvalidInputError(f"{shown}: its multidiffusion chunk is damaged (bad compressed data)") from None
    if len(text) > MAX_RECIPE_BYTES or inflater.unconsumed_tail:
        raise InvalidInputError(
            f"{shown}: its recipe is larger than {MAX_RECIPE_BYTES >> 20} MiB uncompressed, more than a recipe holds"
        )
    return text
