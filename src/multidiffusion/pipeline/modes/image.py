"""The image commands of the pipeline: upscale, outpaint, inpaint. Each builds an
:class:`~multidiffusion.pipeline.modes.image_start.ImageStart` and a canvas size, then makes the panorama call, so
every option of a panorama (views, weights, schedulers, sync, tiled VAE) works on images too; checkpoints do not
yet (the input is not in the checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from multidiffusion.adapters.loading.geometry import geometry_of
from multidiffusion.core.features.conditional import ConditionalSampler
from multidiffusion.pipeline.modes.image_geometry import (
    checked_margins,
    inpaint_canvas,
    outpaint_canvas,
    upscale_canvas,
)
from multidiffusion.pipeline.modes.image_start import (
    DEFAULT_FEATHER_PX,
    ImageStart,
    check_something_to_redraw,
    file_record,
    place,
    read_image,
    read_known,
    resize,
)
from multidiffusion.pipeline.run.output import MultiDiffusionOutput

DEFAULT_UPSCALE_STRENGTH = 0.3  # adds detail and keeps the composition (A1111's tiled upscalers use 0.3–0.4)


def file_input(image: Any) -> dict[str, Any] | None:
    """What the metadata records about an input: a file's name and SHA-256; None for objects in memory."""
    return file_record(image) if isinstance(image, (str, Path)) else None


class ImageInputs:
    """Mixin of :class:`~multidiffusion.pipeline.facade.MultiDiffusionPipeline`: the methods that start from an
    image. ``self(...)`` is the panorama call; every keyword it takes passes through."""

    model: Any
    __call__: Callable[..., MultiDiffusionOutput]  # the panorama call, defined by the pipeline

    def upscale(
        self,
        image: Any,
        scale: float = 2.0,
        prompt: str = "",
        negative_prompt: str | None = None,
        *,
        strength: float = DEFAULT_UPSCALE_STRENGTH,
        noise_inversion_steps: int = 0,
        resample: str = "lanczos",
        **kwargs: Any,
    ) -> MultiDiffusionOutput:
        """Tiled upscaling: enlarge, encode, noise to ``strength``, re-denoise in overlapping views, decode.

        Args:
            image: A path, PIL image, uint8 array (H, W, 3) or float tensor (3, H, W) in [0, 1].
            scale: Each side × scale, rounded to the model's granularity (8 px for SD); > 0.
            prompt: What the image shows ("" works: the views then follow the image alone).
            negative_prompt: As for a panorama.
            strength: In [0, 1]: how much is redrawn (0 returns the encoded enlargement, 1 ignores the input).
            noise_inversion_steps: > 0 inverts the enlarged image to the starting noise level through the same
                views instead of adding fresh noise, so higher strengths keep the original's structure
                (docs/image_inputs.md measures how much).
            resample: ``lanczos`` (default), ``bicubic``, ``bilinear`` or ``nearest``.
            **kwargs: Any keyword of the panorama call (steps, guidance, views, sync, generator, …) except
                height and width.
        """
        start = self.plan_upscale(
            image, scale, strength=strength, noise_inversion_steps=noise_inversion_steps, resample=resample
        )
        return self(prompt, negative_prompt, height=start.size[0], width=start.size[1], image=start, **kwargs)

    def plan_upscale(
        self,
        image: Any,
        scale: float = 2.0,
        *,
        strength: float = DEFAULT_UPSCALE_STRENGTH,
        noise_inversion_steps: int = 0,
        resample: str = "lanczos",
    ) -> ImageStart:
        """The checked start of :meth:`upscale` (its canvas is ``.size``), without running it."""
        pixels = read_image(image)
        height, width = upscale_canvas(geometry_of(self.model), (pixels.shape[2], pixels.shape[3]), scale)
        record = {"mode": "upscale", "input": file_input(image), "scale": float(scale), "resample": resample}
        return ImageStart(
            resize(pixels, height, width, resample),
            strength=strength,
            noise_inversion_steps=noise_inversion_steps,
            record=record,
        )

    def outpaint(
        self,
        image: Any,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        left: int = 0,
        right: int = 0,
        top: int = 0,
        bottom: int = 0,
        feather: float = DEFAULT_FEATHER_PX,
        conditional: ConditionalSampler | None = None,
        **kwargs: Any,
    ) -> MultiDiffusionOutput:
        """Extend a picture by margins (px, multiples of the granularity): the image is kept, the margins are drawn.

        Every step the image's latents, noised to that step, replace the canvas there (feathered inward by
        ``feather`` px); at the end the image region is the encoded original. ``conditional`` chooses how the margins
        are drawn given the image (:class:`~multidiffusion.core.features.conditional.ConditionalSampler`; None: the
        blend). ``views=ViewSettings(tile="x")`` makes a 360° panorama whose left and right ends join. Other keywords
        are the panorama call's.
        """
        start = self.plan_outpaint(
            image, left=left, right=right, top=top, bottom=bottom, feather=feather, conditional=conditional
        )
        return self(prompt, negative_prompt, height=start.size[0], width=start.size[1], image=start, **kwargs)

    def plan_outpaint(
        self,
        image: Any,
        *,
        left: int = 0,
        right: int = 0,
        top: int = 0,
        bottom: int = 0,
        feather: float = DEFAULT_FEATHER_PX,
        conditional: ConditionalSampler | None = None,
    ) -> ImageStart:
        """The checked start of :meth:`outpaint` (its canvas is ``.size``), without running it."""
        geometry = geometry_of(self.model)
        margins = checked_margins(geometry, {"left": left, "right": right, "top": top, "bottom": bottom})
        pixels = read_image(image)
        height, width = outpaint_canvas(geometry, (pixels.shape[2], pixels.shape[3]), margins)
        canvas, known = place(pixels, None, (height, width), left, top)
        record = {"mode": "outpaint", "input": file_input(image), **margins}
        return ImageStart(canvas, known, strength=1.0, feather=feather, conditional=conditional, record=record)

    def inpaint(
        self,
        image: Any,
        mask: Any,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        strength: float = 1.0,
        feather: float = DEFAULT_FEATHER_PX,
        conditional: ConditionalSampler | None = None,
        **kwargs: Any,
    ) -> MultiDiffusionOutput:
        """Redraw the white part of ``mask`` (A1111's and diffusers' convention); the rest is kept.

        Args:
            image: As for :meth:`upscale`; sides in multiples of the granularity.
            mask: The same size as the image: a path, PIL image, array or tensor (white or 1 = redraw).
            prompt: What the redrawn part shows.
            negative_prompt: As for a panorama.
            strength: In [0, 1]; below 1 the masked part starts from the image noised to that strength.
            feather: σ in px of the inward feathering of the kept region (0: hard edge).
            conditional: How the hole is drawn given the rest
                (:class:`~multidiffusion.core.features.conditional.ConditionalSampler`; None: the blend).
            **kwargs: Any keyword of the panorama call except height and width.
        """
        start = self.plan_inpaint(image, mask, strength=strength, feather=feather, conditional=conditional)
        return self(prompt, negative_prompt, height=start.size[0], width=start.size[1], image=start, **kwargs)

    def plan_inpaint(
        self,
        image: Any,
        mask: Any,
        *,
        strength: float = 1.0,
        feather: float = DEFAULT_FEATHER_PX,
        conditional: ConditionalSampler | None = None,
    ) -> ImageStart:
        """The checked start of :meth:`inpaint` (its canvas is ``.size``), without running it."""
        pixels = read_image(image)
        size = (int(pixels.shape[2]), int(pixels.shape[3]))
        known = read_known(mask, size)
        check_something_to_redraw(known)
        inpaint_canvas(geometry_of(self.model), size)
        record = {"mode": "inpaint", "input": file_input(image), "mask": file_input(mask)}
        return ImageStart(pixels, known, strength=strength, feather=feather, conditional=conditional, record=record)
