"""DemoFusion's skip residual (Du et al., CVPR 2024, §3.2, Eq. 6) as a post-step hook (docs/highres.md).

A later stage of a high-resolution run starts from the previous stage's result enlarged, z₀', noised to its first
step. Left alone, the stage drifts from that layout as it denoises; the skip residual pulls it back in the noisy
steps, where the layout is decided, and lets go in the late ones, where the detail is drawn:

    x_t ← c₁ · (√ᾱ_t z₀' + √(1 − ᾱ_t) ε) + (1 − c₁) · x_t,    c₁ = w · ((1 + cos π(T − t)/T) / 2)^γ₁     (Eq. 6)

with ε the stage's own starting noise (so at the first step the blend changes nothing) and the scheduler's own
``add_noise`` (flow matching: (1 − σ_t) z₀' + σ_t ε). DemoFusion blends before each denoising; blending right
after the step into t is the same, and it is a post-step hook of the one loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.dilated import cosine_factor


class SkipResidual:
    """The post-step hook of Eq. 6.

    Args:
        latents: z₀', the previous stage's result enlarged to this canvas, (N, C, H, W) (or (1, C, H, W)).
        noise: ε, the stage's starting noise, (N, C, H, W).
        weight: w in [0, 1]; 0: the hook returns the canvas unchanged.
        decay: γ₁ ≥ 0 (DemoFusion's cosine_scale_1, 3).
        num_train_timesteps: T of the scheduler's training schedule.
    """

    def __init__(self, latents: Tensor, noise: Tensor, weight: float, decay: float, num_train_timesteps: int) -> None:
        if not 0 <= weight <= 1 or decay < 0:
            raise InvalidInputError(
                f"the skip residual needs a weight in [0, 1] and a decay ≥ 0, got {weight}, {decay}"
            )
        self.latents = latents.expand_as(noise)
        self.noise = noise
        self.weight, self.decay, self.num_train_timesteps = weight, decay, num_train_timesteps

    def share(self, t: Tensor | float) -> float:
        """c₁ at training timestep ``t``."""
        return self.weight * cosine_factor(t, self.num_train_timesteps) ** self.decay

    def __call__(self, x: Tensor, step_index: int, scheduler: Any) -> Tensor:
        timesteps = scheduler.timesteps
        if self.weight <= 0 or step_index + 1 >= len(timesteps):  # after the last step x is x₀: nothing to pull
            return x
        t = timesteps[step_index + 1]  # the level x has just been stepped to
        c1 = self.share(t)
        if c1 <= 0:
            return x
        level = (
            torch.as_tensor(t)
            .reshape(1)
            .expand(x.shape[0])
            .to(timesteps.device if hasattr(timesteps, "device") else "cpu")
        )
        target = add_noise(scheduler, self.latents.to(x), self.noise.to(x), level)
        return c1 * target.to(x.dtype) + (1.0 - c1) * x
