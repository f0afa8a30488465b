"""The VAE codec: the only place that knows the latent scale factor and scaling constant."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from multidiffusion.adapters.codecs.tiled_vae import (
    TilingUnsupportedError,
    tiled_decode,
    tiled_encode,
    tiling_unsupported_reason,
)
from multidiffusion.core.engine.sampling import is_out_of_memory
from multidiffusion.core.errors import InvalidInputError, NonFiniteError

TILE_PX = 512
"""Default tile size, pixels: SD's native size. A tile needs about what a full decode of its size needs
(SD's VAE architecture: about 4 KB per pixel in float32, so about 0.5 GB per 512 px tile in half
precision; docs/tiled_vae.md)."""

MIN_TILE_PX = 64
"""The smallest tile the out-of-memory back-off goes down to, pixels."""

TILED_ABOVE_PX = 2**21
"""Automatic mode tiles when batch × height × width (decoded pixels) exceeds this (2 Mpx, e.g. 2048×1024).

A full decode with Stable Diffusion's VAE architecture peaks at about 4 KB of live tensors per output
pixel in float32 (measured on the CPU, docs/tiled_vae.md), so about 2 KB in half precision (estimated:
half the bytes): 4 GB at 2 Mpx, which next to the UNet's weights is what an 8 GB GPU can spare. Tiled
and full agree to float rounding, so the threshold only trades the tiled path's extra time for bounded
memory."""


def decode_bytes_estimate(batch: int, height_px: int, width_px: int, channels: int, itemsize: int, tiled: bool) -> int:
    """Estimated peak bytes of a decode of ``batch`` images of height_px × width_px by a VAE whose full-resolution
    decoder stage has ``channels`` (c₀, ``block_out_channels[0]``) of ``itemsize`` bytes: a whole decode holds about
    8 activations of that size at once (3.9 KB per pixel for SD's VAE in float32, docs/tiled_vae.md), a tiled one
    parks about 4 canvases of it between tiles (docs/tiled_vae.md, "Limits")."""
    return batch * height_px * width_px * (4 if tiled else 8) * channels * itemsize


class VaeCodec:
    """Wraps a diffusers ``AutoencoderKL``.

    Latents here are in the diffusion model's units: ``(z − shift) · scaling_factor``, where z is the
    VAE's own latent.

    Large canvases are decoded and encoded tile by tile without seams (``adapters.codecs.tiled_vae``: GroupNorm
    statistics over the whole canvas, exact halos), so the compute device holds one tile at a time.

    Args:
        vae: The ``AutoencoderKL``.
        tiled: True: always tile; False: never; None (default): tile when batch × height × width (pixels)
            exceeds ``tiled_above_px`` and the VAE's architecture supports it.
        tile_px: Tile size, pixels (a positive multiple of the scale factor); default 512.
        tiled_above_px: The automatic threshold, pixels summed over the batch; default 2²¹.
        park_device: Where whole intermediate canvases wait between tiles; default: the host when the VAE
            is on an accelerator, else the VAE's device.
    """

    def __init__(
        self,
        vae: torch.nn.Module,
        *,
        tiled: bool | None = None,
        tile_px: int = TILE_PX,
        tiled_above_px: int = TILED_ABOVE_PX,
        park_device: torch.device | str | None = None,
    ) -> None:
        self.vae = vae
        config = vae.config
        self.scale_factor: int = 2 ** (len(config.block_out_channels) - 1)
        self.latent_channels: int = int(config.latent_channels)
        self.scaling_factor: float = float(config.scaling_factor)
        self.shift_factor: float = float(getattr(config, "shift_factor", None) or 0.0)
        self.tiled = tiled
        self.tile_px = tile_px
        self.tiled_above_px = tiled_above_px
        self.park_device = park_device

    @property
    def tiled(self) -> bool | None:
        """True: always tile; False: never; None: automatic (see the class docstring)."""
        return self._tiled

    @tiled.setter
    def tiled(self, value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise InvalidInputError(f"tiled must be True, False or None (automatic), got {value!r}")
        if value:
            reason = tiling_unsupported_reason(self.vae)
            if reason is not None:
                raise TilingUnsupportedError(reason)
        self._tiled = value

    @property
    def tile_px(self) -> int:
        """Tile size, pixels: a positive multiple of ``scale_factor``."""
        return self._tile_px

    @tile_px.setter
    def tile_px(self, value: int) -> None:
        f = self.scale_factor
        if isinstance(value, bool) or not isinstance(value, int) or value < f or value % f:
            raise InvalidInputError(
                f"tile size must be a positive multiple of {f} px (the VAE's scale factor), got {value!r}"
            )
        self._tile_px = value

    @property
    def tiled_above_px(self) -> int:
        """The automatic threshold: pixels summed over the batch (a whole number ≥ 0)."""
        return self._tiled_above_px

    @tiled_above_px.setter
    def tiled_above_px(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"tiled_above_px must be a whole number of pixels ≥ 0, got {value!r}")
        self._tiled_above_px = value

    def uses_tiling(self, batch: int, height_px: int, width_px: int) -> bool:
        """Whether a decode or encode of ``batch`` images of height_px × width_px pixels goes by tiles."""
        if self.tiled is not None:
            return self.tiled
        if batch * height_px * width_px <= self.tiled_above_px:
            return False
        return tiling_unsupported_reason(self.vae) is None

    def decode_bytes(self, batch: int, height_px: int, width_px: int) -> int:
        """Estimated peak bytes of a decode of ``batch`` images of height_px × width_px, where the canvas lives
        (the host when decoding on an accelerator with tiles): :func:`decode_bytes_estimate` for this VAE."""
        c0 = int(self.vae.config.block_out_channels[0])
        itemsize = torch.finfo(self.vae.dtype).bits // 8
        return decode_bytes_estimate(
            batch, height_px, width_px, c0, itemsize, self.uses_tiling(batch, height_px, width_px)
        )

    def _encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in the VAE's dtype and device → the VAE's posterior mean (B, C, H/f, W/f)."""
        b, _, h, w = images.shape
        f = self.scale_factor
        tile = self.tile_px if self.uses_tiling(b, h, w) and (self.tiled or (h % f == 0 and w % f == 0)) else None
        while True:
            try:
                if tile is None:
                    return self.vae.encode(images).latent_dist.mean
                moments = tiled_encode(self.vae, images, tile // f, self.park_device)
                return moments[:, : moments.shape[1] // 2]  # (mean, log-variance) along channels
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                tile = self._smaller_tile(exc, tile, "encode", h % f == 0 and w % f == 0)

    def _decode(self, z: Tensor) -> Tensor:
        """(B, C, h, w) VAE latents → (B, 3, h·f, w·f) on the VAE's device, in the VAE's dtype."""
        f = self.scale_factor
        tile = self.tile_px if self.uses_tiling(z.shape[0], z.shape[-2] * f, z.shape[-1] * f) else None
        while True:
            try:
                if tile is None:
                    return self.vae.decode(z).sample
                return tiled_decode(self.vae, z, tile // f, self.park_device).to(self.vae.device)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                tile = self._smaller_tile(exc, tile, "decode", True)

    def _smaller_tile(self, exc: BaseException, tile: int | None, what: str, tileable: bool) -> int:
        """After an out-of-memory error: the tile size to retry with (tiling a whole pass, else half the tile),
        with a warning; re-raises anything else, or when no smaller tile (``MIN_TILE_PX``) is left. Tiled and
        whole passes agree to float rounding, so only memory changes."""
        if not is_out_of_memory(exc):
            raise exc
        f = self.scale_factor
        if tile is None:
            if not tileable or tiling_unsupported_reason(self.vae) is not None:
                raise exc
            smaller = self.tile_px
        else:
            smaller = max(f, tile // 2 // f * f)
            if smaller < MIN_TILE_PX or smaller == tile:
                raise exc
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        warnings.warn(
            f"out of memory in the VAE {what}; retrying it in tiles of {smaller} px (set the codec's tile_px to "
            "start there)",
            RuntimeWarning,
            stacklevel=4,
        )
        return smaller

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [−1, 1] → (B, C, H/f, W/f): the posterior mean, scaled (deterministic).

        Tiled (see the class docstring) when ``uses_tiling(B, H, W)``; forced tiling needs H and W in
        multiples of f (automatic mode encodes other sizes whole).
        """
        z = self._encode(images.to(self.vae.device, self.vae.dtype))
        return ((z.float() - self.shift_factor) * self.scaling_factor).float()

    def decode_differentiable(self, latents: Tensor) -> Tensor:
        """Like :meth:`decode` but builds an autograd graph (SyncDiffusion's gradient); never tiled, no retry."""
        z = latents / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) → (B, 3, h·f, w·f) float32 in [−1, 1] (not clamped), on the VAE's device.

        Tiled (see the class docstring) when ``uses_tiling(B, h·f, w·f)``.

        Half-precision VAEs can overflow to inf/NaN (black images). Such a decode is redone in float32
        with a warning; a non-finite float32 result raises instead of returning a black image.
        """
        z = latents / self.scaling_factor + self.shift_factor
        image = self._decode(z.to(self.vae.device, self.vae.dtype))
        if not bool(torch.isfinite(image).all()):
            if self.vae.dtype == torch.float32:
                raise NonFiniteError("the VAE decode produced non-finite values even in float32")
            warnings.warn(
                f"VAE decode in {self.vae.dtype} gave non-finite values; decoding again in float32",
                RuntimeWarning,
                stacklevel=2,
            )
            dtype = self.vae.dtype
            self.vae.to(torch.float32)
            try:
                image = self._decode(z.to(self.vae.device, torch.float32))
            finally:
                self.vae.to(dtype)
            if not bool(torch.isfinite(image).all()):
                raise NonFiniteError("the VAE decode produced non-finite values even in float32")
        return image.float()
