"""Results of a pipeline call and the conversion of decoded images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.pipeline.settings.recipe import GenerationMetadata


@dataclass
class MultiDiffusionOutput:
    """What a pipeline call returns.

    Attributes:
        images: ``pil``: a list of N PIL images; ``np``: float array (N, H, W, 3) in [0, 1];
            ``pt``: float tensor (N, 3, H, W) in [0, 1]; ``latent``: the latents (N, C, h, w).
        latents: The final canvas latents (N, C, h, w), float32, on the model's device.
        metadata: Everything needed to regenerate the images.
        steps_run: Scheduler steps taken, one denoiser evaluation per view each: Heun and PLMS take more
            than ``num_inference_steps``, a callback that stops early fewer, a run that starts from an image at
            strength s about s · ``num_inference_steps`` (0 at strength 0).
    """

    images: Any
    latents: Tensor
    metadata: GenerationMetadata
    steps_run: int


def to_unit_range(images: Tensor) -> Tensor:
    """Decoded images in [−1, 1] → [0, 1], clamped, float32 on the CPU."""
    return (images.float() / 2 + 0.5).clamp(0, 1).cpu()


def to_pil(images01: Tensor) -> list[Any]:
    """(N, 3, H, W) in [0, 1] → N RGB PIL images (rounded like diffusers' ``numpy_to_pil``)."""
    from PIL import Image

    array = (images01.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def convert(images: Tensor, output_type: str) -> Any:
    """Decoded images in [−1, 1] → the requested output type (not ``latent``)."""
    unit = to_unit_range(images)
    if output_type == "pt":
        return unit
    if output_type == "np":
        return unit.permute(0, 2, 3, 1).numpy()
    return to_pil(unit)


def seed_of(generator: torch.Generator | None) -> int | None:
    """The generator's seed if it is still in its freshly seeded state, else None."""
    if generator is None:
        return None
    seed = generator.initial_seed()
    fresh = torch.Generator(device=generator.device).manual_seed(seed)
    return seed if torch.equal(fresh.get_state(), generator.get_state()) else None
