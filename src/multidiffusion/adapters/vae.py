"""The VAE codec: the only place that knows the latent scale factor and scaling constant."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


class VaeCodec:
    """Wraps a diffusers ``AutoencoderKL``.

    Latents here are in the diffusion model's units: ``(z − shift) · scaling_factor``, where z is the
    VAE's own latent.
    """

    def __init__(self, vae: torch.nn.Module) -> None:
        self.vae = vae
        config = vae.config
        self.scale_factor: int = 2 ** (len(config.block_out_channels) - 1)
        self.latent_channels: int = int(config.latent_channels)
        self.scaling_factor: float = float(config.scaling_factor)
        self.shift_factor: float = float(getattr(config, "shift_factor", None) or 0.0)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [−1, 1] → (B, C, H/f, W/f): the posterior mean, scaled (deterministic)."""
        z = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist.mean
        return ((z.float() - self.shift_factor) * self.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) → (B, 3, h·f, w·f) float32 in [−1, 1] (not clamped).

        Half-precision VAEs can overflow to inf/NaN (black images). Such a decode is redone in float32
        with a warning; a non-finite float32 result raises instead of returning a black image.
        """
        z = latents / self.scaling_factor + self.shift_factor
        image = self.vae.decode(z.to(self.vae.device, self.vae.dtype)).sample
        if not bool(torch.isfinite(image).all()):
            if self.vae.dtype == torch.float32:
                raise FloatingPointError("the VAE decode produced non-finite values even in float32")
            warnings.warn(
                f"VAE decode in {self.vae.dtype} gave non-finite values; decoding again in float32",
                RuntimeWarning,
                stacklevel=2,
            )
            dtype = self.vae.dtype
            self.vae.to(torch.float32)
            try:
                image = self.vae.decode(z.to(self.vae.device, torch.float32)).sample
            finally:
                self.vae.to(dtype)
            if not bool(torch.isfinite(image).all()):
                raise FloatingPointError("the VAE decode produced non-finite values even in float32")
        return image.float()
