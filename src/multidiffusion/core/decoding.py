"""Decoding helpers that work for any :class:`~multidiffusion.core.types.Codec`."""

from __future__ import annotations

import torch
from torch import Tensor

from .types import Codec


def decode_wrapped(codec: Codec, latents: Tensor, pad: int = 8) -> Tensor:
    """Decode a horizontally circular canvas so its left and right edges also continue each other.

    The decoder's receptive field spans several latent cells, so a plain decode sees a hard border at
    both ends of a 360° panorama. Here the latents are padded with ``pad`` columns from the opposite
    side (wrap-around), decoded, and the padding is cut off again.

    Args:
        codec: Any codec.
        latents: (N, C, h, w).
        pad: Columns of wrap-around context per side, latent cells (capped at w).

    Returns:
        (N, 3, h·f, w·f) like ``codec.decode(latents)``.
    """
    pad = min(pad, latents.shape[-1])
    if pad <= 0:
        return codec.decode(latents)
    padded = torch.cat([latents[..., -pad:], latents, latents[..., :pad]], dim=-1)
    image = codec.decode(padded)
    cut = pad * codec.scale_factor
    return image[..., cut:-cut]
