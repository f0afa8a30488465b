"""Region masks stored inside an image's metadata, so a region image regenerates from its PNG alone."""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError


def encode_mask(mask: Tensor) -> dict[str, Any]:
    """(H, W) float32 mask → ``{"mask_size": [H, W], "mask_data": base64(zlib(float32 bytes))}``.

    Exact (the float32 values round-trip bit for bit); a painted or boxed mask of few distinct values
    compresses to a few hundred bytes per megapixel.
    """
    array = np.ascontiguousarray(mask.detach().cpu().numpy(), dtype="<f4")
    return {"mask_size": list(array.shape), "mask_data": base64.b64encode(zlib.compress(array.tobytes(), 9)).decode()}


def decode_mask(record: dict[str, Any], where: str) -> Tensor:
    """The mask of :func:`encode_mask` back as an (H, W) float32 tensor."""
    try:
        height, width = (int(v) for v in record["mask_size"])
        raw = zlib.decompress(base64.b64decode(record["mask_data"]))
        array = np.frombuffer(raw, dtype="<f4").reshape(height, width)
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise InvalidInputError(f"{where}: the recorded mask cannot be read ({exc})") from exc
    return torch.from_numpy(array.astype(np.float32))
