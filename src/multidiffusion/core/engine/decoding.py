"""Decoding helpers that work for any :class:`~multidiffusion.core.types.Codec`."""

from __future__ import annotations

import torch
from torch import Tensor

from multidiffusion.core.engine.views import Wrap, resolve_wrap
from multidiffusion.core.types import Codec


def wrap_pad(latents: Tensor, pad: int, wrap: Wrap) -> Tensor:
    """Pad a canvas with ``pad`` cells from the opposite side on each wrapped axis (periodic padding).

    Args:
        latents: (N, C, h, w).
        pad: Cells per side, capped at the axis' size.
        wrap: Which axes to pad, (rows, cols).

    Returns:
        (N, C, h + 2·p_rows, w + 2·p_cols) with p = ``min(pad, size)`` on a wrapped axis, 0 on the other.
    """
    out = latents
    for dim, wrapped in ((-2, wrap[0]), (-1, wrap[1])):
        p = min(pad, out.shape[dim]) if wrapped else 0
        if p > 0:
            out = torch.cat([out.narrow(dim, out.shape[dim] - p, p), out, out.narrow(dim, 0, p)], dim=dim)
    return out


def decode_wrapped(codec: Codec, latents: Tensor, pad: int = 8, *, wrap: Wrap | None = None) -> Tensor:
    """Decode a canvas that wraps around, so its opposite edges also continue each other.

    The decoder's receptive field spans several latent cells, so a plain decode sees a hard border at
    both ends of a wrapped axis. Here the latents are padded with ``pad`` cells from the opposite side on
    every wrapped axis (:func:`wrap_pad`), decoded, and the padding is cut off again. A tiled codec decodes
    the padded canvas like any other, so the tiled path wraps the same way.

    Args:
        codec: Any codec.
        latents: (N, C, h, w).
        pad: Cells of wrap-around context per side, latent cells (capped at the axis' size).
        wrap: Which axes wrap, (rows, cols); default ``(False, True)``, a 360° panorama.

    Returns:
        (N, 3, h·f, w·f) like ``codec.decode(latents)``.
    """
    wrap = resolve_wrap(wrap, circular=wrap is None)
    p_rows = min(pad, latents.shape[-2]) if wrap[0] and pad > 0 else 0
    p_cols = min(pad, latents.shape[-1]) if wrap[1] and pad > 0 else 0
    if p_rows == 0 and p_cols == 0:
        return codec.decode(latents)
    image = codec.decode(wrap_pad(latents, pad, wrap))
    f = codec.scale_factor
    height, width = latents.shape[-2] * f, latents.shape[-1] * f
    return image[..., p_rows * f : p_rows * f + height, p_cols * f : p_cols * f + width]
