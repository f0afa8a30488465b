"""A codec whose latent cell packs p × p cells of a VAE: the token grid of patch-based transformers.

SD 3 and Flux denoise 2 × 2 patches of their VAE's 16-channel latent. Treating one patch as one latent cell
of the canvas (64 channels, 16 px) keeps every view on whole patches, so the engine's crops, strides and
weights never cut a token, and Flux's packed sequence is just the crop read row by row. The packing is
space-to-depth (``pixel_unshuffle``): channel c·p² + dy·p + dx holds VAE channel c at offset (dy, dx) of the
patch, which is Flux's ``_pack_latents`` order.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import pixel_shuffle, pixel_unshuffle

from multidiffusion.adapters.codecs.vae import VaeCodec


def pack(latents: Tensor, patch: int) -> Tensor:
    """(B, C, h·p, w·p) → (B, C·p², h, w), space-to-depth."""
    return pixel_unshuffle(latents, patch)


def unpack(latents: Tensor, patch: int) -> Tensor:
    """(B, C·p², h, w) → (B, C, h·p, w·p), the inverse of :func:`pack`."""
    return pixel_shuffle(latents, patch)


def tokens(latents: Tensor) -> Tensor:
    """(B, D, h, w) → (B, h·w, D): the cells read row by row as a token sequence (Flux's packed latents)."""
    return latents.flatten(2).transpose(1, 2)


def untokens(sequence: Tensor, height: int, width: int) -> Tensor:
    """(B, h·w, D) → (B, D, h, w), the inverse of :func:`tokens`."""
    return sequence.transpose(1, 2).reshape(sequence.shape[0], sequence.shape[2], height, width)


class PackedCodec:
    """A :class:`~multidiffusion.adapters.codecs.vae.VaeCodec` seen through p × p packing.

    ``scale_factor`` is the VAE's times p (16 px for SD 3 and Flux) and ``latent_channels`` the VAE's times p²
    (64). Encoding and decoding (tiled or whole, with the fp32 fallback of a non-finite half-precision
    decode) are the VAE codec's; ``tiled``, ``tile_px`` and ``tiled_above_px`` are its settings.
    """

    def __init__(self, inner: VaeCodec, patch: int = 2) -> None:
        self.inner = inner
        self.patch = patch
        self.scale_factor: int = inner.scale_factor * patch
        self.latent_channels: int = inner.latent_channels * patch * patch

    @property
    def vae(self) -> torch.nn.Module:
        """The wrapped VAE."""
        return self.inner.vae

    @property
    def tiled(self) -> bool | None:
        """The VAE codec's tiling choice (see :class:`~multidiffusion.adapters.codecs.vae.VaeCodec`)."""
        return self.inner.tiled

    @tiled.setter
    def tiled(self, value: bool | None) -> None:
        self.inner.tiled = value

    @property
    def tile_px(self) -> int:
        """The VAE codec's tile size, pixels."""
        return self.inner.tile_px

    @tile_px.setter
    def tile_px(self, value: int) -> None:
        self.inner.tile_px = value

    @property
    def tiled_above_px(self) -> int:
        """The VAE codec's automatic tiling threshold, pixels."""
        return self.inner.tiled_above_px

    @tiled_above_px.setter
    def tiled_above_px(self, value: int) -> None:
        self.inner.tiled_above_px = value

    def uses_tiling(self, batch: int, height_px: int, width_px: int) -> bool:
        """Whether the VAE codec tiles a decode or encode of this size."""
        return self.inner.uses_tiling(batch, height_px, width_px)

    def decode_bytes(self, batch: int, height_px: int, width_px: int) -> int:
        """The VAE codec's estimate (:meth:`~multidiffusion.adapters.codecs.vae.VaeCodec.decode_bytes`)."""
        return self.inner.decode_bytes(batch, height_px, width_px)

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [−1, 1] → (B, C·p², H / (f·p), W / (f·p)); H and W multiples of f·p."""
        return pack(self.inner.encode(images), self.patch)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C·p², h, w) → (B, 3, h·f·p, w·f·p) float32 in [−1, 1]."""
        return self.inner.decode(unpack(latents, self.patch))

    def decode_differentiable(self, latents: Tensor) -> Tensor:
        """Like :meth:`decode` but builds an autograd graph (SyncDiffusion's gradient); never tiled."""
        return self.inner.decode_differentiable(unpack(latents, self.patch))
