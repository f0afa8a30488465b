"""Region masks stored inside an image's metadata, so a region image regenerates from its PNG alone.

A recorded mask is untrusted input like the rest of a recipe: its declared size is checked against the canvas and
the pixel limit, and its compressed data against that size, before anything is decoded; it is then inflated no
further than the declared size, so a small record that expands to gigabytes costs no more than the canvas's mask.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.inputs.image_files import MAX_IMAGE_PX

ZLIB_OVERHEAD = 64
"""Bytes zlib adds to incompressible data beyond 5 per 16 KiB block: its header, trailer and last block."""


def encode_mask(mask: Tensor) -> dict[str, Any]:
    """(H, W) float32 mask → ``{"mask_size": [H, W], "mask_data": base64(zlib(float32 bytes))}``.

    Exact (the float32 values round-trip bit for bit); a painted or boxed mask of few distinct values
    compresses to a few hundred bytes per megapixel.
    """
    array = np.ascontiguousarray(mask.detach().cpu().numpy(), dtype="<f4")
    return {"mask_size": list(array.shape), "mask_data": base64.b64encode(zlib.compress(array.tobytes(), 9)).decode()}


def decode_mask(record: Mapping[str, Any], where: str, canvas: tuple[int, int] | None = None) -> Tensor:
    """The mask of :func:`encode_mask` back as an (H, W) float32 tensor.

    Args:
        record: Holds ``mask_size`` [H, W] and ``mask_data``.
        where: Names the mask in messages (e.g. ``regions[2]``).
        canvas: (H, W) px the mask must have; None: any size up to :data:`MAX_IMAGE_PX`.

    Raises:
        InvalidInputError: the size is missing, not the canvas's or over the limit (checked before decoding); the
            data is not base64 of a zlib stream of exactly H·W float32 values (it is inflated no further than
            H·W·4 bytes + 1). One line.
    """
    size = record.get("mask_size")
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise InvalidInputError(f"{where}: the recorded mask_size must be [height, width] in pixels, got {size!r:.60}")
    height, width = size
    if canvas is not None and (height, width) != tuple(canvas):
        raise InvalidInputError(
            f"{where}: the recorded mask is {width}×{height} px (width×height); "
            f"the canvas is {canvas[1]}×{canvas[0]} px"
        )
    if height * width > MAX_IMAGE_PX:
        raise InvalidInputError(
            f"{where}: the recorded mask has {height * width:,} px; the limit is {MAX_IMAGE_PX:,} px"
        )
    expected = height * width * 4
    data = record.get("mask_data")
    if not isinstance(data, str):
        raise InvalidInputError(f"{where}: the recorded mask_data must be a base64 string")
    most = expected + 5 * (expected // 16384 + 1) + ZLIB_OVERHEAD  # zlib's worst case for these bytes
    if len(data) > 4 * (most // 3 + 1):
        raise InvalidInputError(
            f"{where}: the recorded mask_data is {len(data):,} characters, more than a {width}×{height} mask needs"
        )
    try:
        compressed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{where}: the recorded mask_data is not base64") from None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected + 1)
    except zlib.error:
        raise InvalidInputError(f"{where}: the recorded mask_data is not zlib-compressed data") from None
    if len(raw) > expected or inflater.unconsumed_tail or inflater.unused_data:
        raise InvalidInputError(f"{where}: the recorded mask holds more data than its {width}×{height} px")
    if len(raw) < expected or not inflater.eof:
        raise InvalidInputError(f"{where}: the recorded mask holds less data than its {width}×{height} px")
    return torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(height, width).astype(np.float32))
