"""Results of a pipeline call and the conversion of decoded images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
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

    def save(self, path: str | os.PathLike[str], index: int | None = None) -> list[Path]:
        """Write the images as PNGs that carry their recipe, so that
        :meth:`~multidiffusion.pipeline.MultiDiffusionPipeline.reproduce` and ``multidiffusion reproduce`` regenerate
        them (``images[i].save(path)`` of PIL writes no recipe). Each file is written atomically; a sphere's carries
        the GPano XMP tags of a photo sphere too.

        Args:
            path: A ``.png`` file (missing folders are made). With several images and no ``index``: ``stem-0.png``,
                ``stem-1.png``, … beside it, as the command line names them.
            index: Write only image ``index``, to ``path`` itself.

        Returns:
            The files written.

        Raises:
            InvalidInputError: the path is not a writable ``.png`` name, the index is out of range, or the images
                are not PIL images (``output_type="pil"``, the default).
            OutputError: a file could not be written (its image is rescued to the temporary folder; the line says
                where).
        """
        from multidiffusion.pipeline.files.gpano import gpano_xmp
        from multidiffusion.pipeline.files.png import check_output_path, save_png
        from multidiffusion.pipeline.settings.recipe import METADATA_KEY

        if not isinstance(self.images, list):
            raise InvalidInputError("only PIL images can be saved as PNGs: run with output_type='pil' (the default)")
        count = len(self.images)
        if index is not None and not (isinstance(index, int) and 0 <= index < count):
            raise InvalidInputError(f"index must be a whole number in 0…{count - 1}, got {index!r}")
        out = Path(path)
        wanted = [index] if index is not None else list(range(count))
        paths = [out] if len(wanted) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in wanted]
        for file in paths:
            check_output_path(file)
        meta = self.metadata
        for i, file in zip(wanted, paths, strict=True):
            image = self.images[i]
            # a whole sphere is tagged as a photo sphere (GPano XMP), so viewers and photo sites show it as 360°
            xmp = gpano_xmp(*image.size) if meta.mode == "sphere" else None
            save_png(image, file, {"parameters": meta.to_a1111(i), METADATA_KEY: meta.to_json(i)}, xmp=xmp)
        return paths


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
