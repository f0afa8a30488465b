"""Initial noise, drawn as diffusers' ``randn_tensor`` draws it so a seed means the same image in both."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError


def initial_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype,
    patch: int = 1,
) -> Tensor:
    """Standard normal noise of ``shape`` (N, C, h, w).

    Like ``diffusers.utils.torch_utils.randn_tensor`` for one generator: a CPU generator draws on the
    CPU in ``dtype`` and the result moves to ``device``; a generator on another device draws there.

    ``patch`` p > 1 is for models whose latent cell packs p × p cells of their VAE (Flux, SD3 here): the
    noise is drawn as their own pipelines draw it, (N, C / p², h·p, w·p), then packed by space-to-depth
    (``pixel_unshuffle``: channel c·p² + dy·p + dx, Flux's ``_pack_latents`` order), so a seed gives the
    same start as in diffusers.
    """
    if patch > 1:
        n, c, h, w = shape
        if c % (patch * patch):
            raise InvalidInputError(
                f"{c} channels do not pack into {patch}×{patch} patches; the channels must be a multiple of "
                f"{patch * patch}"
            )
        flat = initial_noise((n, c // (patch * patch), h * patch, w * patch), generator, device, dtype)
        return torch.nn.functional.pixel_unshuffle(flat, patch)
    device = torch.device(device)
    rand_device = device
    if generator is not None and generator.device.type != device.type:
        if generator.device.type != "cpu":
            raise InvalidInputError(
                f"cannot draw {device.type} noise from a {generator.device.type} generator; use a CPU generator "
                f"or one on {device.type}"
            )
        rand_device = torch.device("cpu")
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)


def add_noise(scheduler: Any, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """A clean ``sample`` noised to ``timesteps`` (one per row) the way ``scheduler`` defines its x_t.

    Diffusion schedulers: their ``add_noise``, x_t = sqrt(ᾱ_t) x₀ + sqrt(1 − ᾱ_t) ε (DDPM Eq. 4). Flow-matching
    schedulers (SD 3, Flux) have ``scale_noise`` instead: x_t = (1 − σ_t) x₀ + σ_t ε (Esser et al. 2024, Eq. 1).
    """
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(sample, noise, timesteps)
    return scheduler.scale_noise(sample, timesteps, noise)
