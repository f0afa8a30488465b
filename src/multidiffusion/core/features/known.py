"""Known regions: blended latent diffusion on the canvas (Avrahami et al., 2023, Alg. 1 with latents).

After every scheduler step the known part of the canvas is replaced by the known latents noised to the level
of the next step, blended by the known mask m (1 = keep, 0 = generate):

    x_{t−1} ← m ⊙ q(x₀ᵏⁿᵒʷⁿ, t−1) + (1 − m) ⊙ x_{t−1},        q(x₀, t) = the scheduler's add_noise,

and after the last step with x₀ᵏⁿᵒʷⁿ itself, so the known region ends as the encoded original exactly where
m = 1. This is diffusers' rule for inpainting with a 4-channel model (the same ε noises every step, the one
drawn for the canvas). The model sees the known content through every view that overlaps it, so views that
straddle the border continue it; docs/image_inputs.md measures how well on the exact model. Other ways to draw the
rest given the known region (RePaint's resampling, DDNM, the Tweedie projection) wrap this hook:
:mod:`~multidiffusion.core.features.conditional`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.errors import InvalidInputError


def latent_mask(mask_px: Tensor, cell_px: int, feather_px: float = 0.0) -> Tensor:
    """A pixel mask (1 = known) as a mask of latent cells, feathered inward.

    Args:
        mask_px: (N or 1, 1, H, W) float in [0, 1], H and W multiples of ``cell_px``.
        cell_px: Pixels per latent cell (the codec's scale factor).
        feather_px: Standard deviation of a Gaussian blur, px; the blurred mask is capped by the hard one, so
            the blend ramps up *inside* the known region and nothing outside it is ever treated as known.
            0: no feathering.

    Returns:
        (N or 1, 1, H / cell_px, W / cell_px) float32: the fraction of each cell that is known (area mean).
    """
    if mask_px.ndim != 4 or mask_px.shape[1] != 1:
        raise InvalidInputError(f"a mask must be (N, 1, H, W), got shape {tuple(mask_px.shape)}")
    m = mask_px.float()
    if feather_px > 0:
        radius = max(1, int(3 * feather_px + 0.5))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=m.device)
        kernel = torch.exp(-0.5 * (x / feather_px) ** 2)
        kernel = kernel / kernel.sum()
        # Blur the *unknown* mask, padded with the edge values (the canvas border is not an unknown region): where
        # no tap reaches an unknown pixel it is exactly 0, so the known region beyond the ramp stays exactly 1.
        unknown = 1 - m
        blurred = F.conv2d(F.pad(unknown, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
        # Only the inward ramp: a cell is at most as known as its hard mask says (0.5 blurred unknown at the border).
        m = torch.minimum(m, (1 - 2 * blurred).clamp(0, 1))
    return F.avg_pool2d(m, cell_px) if cell_px > 1 else m


@dataclass(frozen=True)
class KnownRegion:
    """The post-step hook that keeps the known region (see the module docstring).

    Attributes:
        latents: x₀ᵏⁿᵒʷⁿ, (N or 1, C, H, W) latent cells: the encoded image (values where m = 0 are unused).
        mask: m, (N or 1, 1, H, W) in [0, 1], 1 = known.
        noise: ε, (N, C, H, W): the canvas's initial noise, reused at every step (as diffusers does).
    """

    latents: Tensor
    mask: Tensor
    noise: Tensor

    def __call__(self, x: Tensor, step_index: int, scheduler: Any) -> Tensor:
        """x_{t−1} after step ``step_index`` → the canvas with the known region put back (same shape)."""
        timesteps = scheduler.timesteps
        if step_index + 1 < len(timesteps):
            t_next = timesteps[step_index + 1]
            known = add_noise(scheduler, self.latents.expand_as(x), self.noise, t_next.expand(x.shape[0]))
        else:  # after the last step: the clean known latents themselves
            known = self.latents.expand_as(x)
        m = self.mask.to(x.dtype)
        return m * known.to(x.dtype) + (1 - m) * x
