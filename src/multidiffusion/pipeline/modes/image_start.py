"""Canvases that start from an image: the image, what of it is kept, and how far it is noised.

One description serves every image command: an upscale is the enlarged image noised to ``strength`` (SDEdit,
Meng et al. 2022, as diffusers' img2img pipelines start); an outpaint is a larger canvas whose known pixels are
the image; an inpaint keeps everything but a mask. :func:`prepare_start` turns it into the engine's start state
and its post-step hook (docs/image_inputs.md; the loop itself does not change, docs/design.md §3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.conditional import ConditionalSampler, known_hook
from multidiffusion.core.features.known import KnownRegion, latent_mask
from multidiffusion.core.features.regions import mask_tensor
from multidiffusion.pipeline.inputs.image_files import open_image
from multidiffusion.pipeline.settings.checks import check_number

RESAMPLERS: tuple[str, ...] = ("lanczos", "bicubic", "bilinear", "nearest")
MAX_INVERSION_STEPS = 1000
DEFAULT_FEATHER_PX = 4.0  # A1111's default mask blur
MAX_FEATHER_PX = 256.0


@dataclass(frozen=True)
class ImageStart:
    """What a canvas starts from when it starts from an image.

    Attributes:
        image: (1, 3, H, W) float32 in [−1, 1], the canvas size in pixels (unknown pixels hold anything; they
            are never kept).
        known: (1, 1, H, W) float32 in [0, 1], 1 = keep this pixel (blended each step, exact at the end where
            it is 1 away from the feathering); None: nothing is kept (upscale, img2img).
        strength: How far the image is noised before denoising, in [0, 1]: the run takes the last steps ·
            strength steps, rounded as the family's own img2img pipeline rounds (down for SD and SDXL, up for
            SD 3 and Flux). 0 returns the encoded image; 1 starts from pure
            noise, as a text-to-image run (the known region still steers it).
        feather: σ in px of the inward feathering of ``known`` (0: a hard edge).
        conditional: How the rest is drawn given the known region
            (:class:`~multidiffusion.core.features.conditional.ConditionalSampler`): None or ``blend``, the blend of
            every step; ``repaint`` resamples, ``ddnm`` projects x̂₀. Unused without ``known``.
        noise_inversion_steps: > 0: instead of fresh noise, the encoded image is inverted deterministically to
            the starting level in this many steps through the same views (see
            :mod:`~multidiffusion.adapters.schedulers.inversion`).
        record: What the run's metadata records about the input (its name, SHA-256, the command's options).
    """

    image: Tensor
    known: Tensor | None = None
    strength: float = 1.0
    feather: float = 0.0
    noise_inversion_steps: int = 0
    conditional: ConditionalSampler | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 4 or self.image.shape[:2] != (1, 3):
            raise InvalidInputError(f"the image must be (1, 3, H, W), got shape {tuple(self.image.shape)}")
        if self.known is not None and tuple(self.known.shape) != (1, 1, *self.image.shape[2:]):
            h, w = self.image.shape[2:]
            raise InvalidInputError(
                f"the mask is {self.known.shape[-1]}×{self.known.shape[-2]} px but the image is {w}×{h} px; "
                "they must be the same size"
            )
        check_number("strength", self.strength, 0.0, 1.0)
        check_number("feather", self.feather, 0.0, MAX_FEATHER_PX, " px")
        if self.conditional is not None and not isinstance(self.conditional, ConditionalSampler):
            raise InvalidInputError(
                f"conditional must be a ConditionalSampler (or None: blend), got {type(self.conditional).__name__}"
            )
        steps = self.noise_inversion_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_INVERSION_STEPS:
            raise InvalidInputError(
                f"noise inversion steps must be an integer in 0…{MAX_INVERSION_STEPS}, got {steps!r}"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in px."""
        return int(self.image.shape[2]), int(self.image.shape[3])


def file_record(path: str | Path) -> dict[str, Any]:
    """An input file as the metadata names it: its own name (never its directory) and its SHA-256."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"name": Path(path).name, "sha256": digest}


def read_image(image: Any, what: str = "image") -> Tensor:
    """An image as the user gave it → (1, 3, H, W) float32 in [−1, 1].

    Args:
        image: A path, a PIL image (any mode; converted to RGB), a uint8 NumPy array (H, W, 3), or a float tensor
            (3, H, W) / (1, 3, H, W) in [0, 1] (torchvision's convention).
        what: Names it in errors.
    """
    if isinstance(image, (str, Path)):
        image = open_image(image, what, "RGB")
    if hasattr(image, "getbands"):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInputError(f"the {what} as an array must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
    elif isinstance(image, Tensor):
        tensor = image.detach().float().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise InvalidInputError(
                f"the {what} as a tensor must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}"
            )
        if not bool(torch.isfinite(tensor).all()) or float(tensor.min()) < 0 or float(tensor.max()) > 1:
            raise InvalidInputError(f"the {what} as a float tensor must hold values in [0, 1]")
    else:
        raise InvalidInputError(
            f"the {what} must be a file path, a PIL image, a uint8 array or a tensor, got {type(image).__name__}"
        )
    if min(tensor.shape[1:]) < 1:
        raise InvalidInputError(f"the {what} has no pixels")
    return (tensor * 2.0 - 1.0)[None]


def read_known(mask: Any, size: tuple[int, int], invert: bool = True, what: str = "mask") -> Tensor:
    """A user's mask → the known mask (1, 1, H, W): with ``invert`` (an inpainting mask: white = repaint, as in
    A1111 and diffusers) 1 − mask, else the mask itself. The mask must be ``size`` (H, W)."""
    if isinstance(mask, (str, Path)):
        mask = open_image(mask, what, "L")
    values = mask_tensor(mask, what)
    if tuple(values.shape) != tuple(size):
        raise InvalidInputError(
            f"the {what} is {values.shape[1]}×{values.shape[0]} px but the image is {size[1]}×{size[0]} px; "
            "they must be the same size"
        )
    return (1.0 - values if invert else values)[None, None]


def check_something_to_redraw(known: Tensor) -> None:
    """An inpainting mask must mark something to redraw (the known mask is not 1 everywhere)."""
    if bool((known >= 1).all()):
        raise InvalidInputError("the mask is all black: nothing to redraw (white marks what to redraw)")


def resize(image: Tensor, height: int, width: int, resample: str) -> Tensor:
    """(1, 3, h, w) in [−1, 1] → (1, 3, height, width), resampled by PIL (``RESAMPLERS``; Lanczos by default)."""
    from PIL import Image

    if resample not in RESAMPLERS:
        raise InvalidInputError(f"unknown resampling {resample!r}; choose one of: {', '.join(RESAMPLERS)}")
    if tuple(image.shape[2:]) == (height, width):
        return image
    pixels = ((image[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    filters = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    out = Image.fromarray(pixels).resize((width, height), filters[resample])
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).float()[None] / 127.5 - 1.0


def scaled_size(height: int, width: int, scale: float, granularity: int) -> tuple[int, int]:
    """The canvas of an upscale: each side × ``scale``, rounded to the nearest multiple of ``granularity`` px."""
    check_number("scale", scale, 1e-3, 64.0)
    return tuple(max(granularity, round(side * scale / granularity) * granularity) for side in (height, width))  # type: ignore[return-value]


def place(
    image: Tensor, known: Tensor | None, size: tuple[int, int], left: int, top: int, what: str = "the image"
) -> tuple[Tensor, Tensor]:
    """An image put on a larger canvas of ``size`` (H, W) px with its top-left corner at (left, top): (the canvas,
    mid-grey (0) outside the image; the known mask, the image's own ``known`` (default all 1) inside and 0 outside).
    """
    _, _, h, w = image.shape
    height, width = size
    if top + h > height or left + w > width:
        raise InvalidInputError(
            f"{what} is {w}×{h} px and placed at ({left}, {top}) it reaches ({left + w}, {top + h}), past the "
            f"{width}×{height} px canvas"
        )
    canvas = torch.zeros(1, 3, height, width)
    canvas[:, :, top : top + h, left : left + w] = image
    mask = torch.zeros(1, 1, height, width)
    mask[:, :, top : top + h, left : left + w] = 1.0 if known is None else known
    return canvas, mask


@dataclass(frozen=True)
class PreparedStart:
    """An image start made concrete for one run.

    Attributes:
        latents: The encoded image (1, C, h, w).
        first_step: The index into the scheduler's timesteps where denoising starts.
        hooks: Post-step hooks (the known region), for :func:`~multidiffusion.core.engine.sampling.sample`.
    """

    latents: Tensor
    first_step: int
    hooks: list[Any]


def prepare_start(model: Any, start: ImageStart, scheduler: Any, noise: Tensor, num_steps: int) -> PreparedStart:
    """Encode the image, pick the first of ``num_steps`` steps from the strength (``model.first_step``; times the
    scheduler's order, as diffusers indexes second-order schedulers' doubled timesteps) and build the known-region
    hook.

    ``scheduler`` has its timesteps set; its begin index is set to the first step (where it has one), as
    diffusers' img2img pipelines set it, so stateful schedulers (Euler, DPM-Solver++) index from there.
    """
    f = model.codec.scale_factor
    with torch.no_grad():
        latents = model.codec.encode(start.image.to(model.device)).float().to(noise.device)
    first = min(
        model.first_step(num_steps, start.strength) * int(getattr(scheduler, "order", 1)), len(scheduler.timesteps)
    )
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    hooks: list[Any] = []
    if start.known is not None:
        mask = latent_mask(start.known.to(noise.device), f, start.feather)
        hooks.append(known_hook(KnownRegion(latents, mask, noise), start.conditional, scheduler, first))
    return PreparedStart(latents, first, hooks)


def noised(scheduler: Any, prepared: PreparedStart, noise: Tensor) -> Tensor:
    """The canvas at the first step from fresh noise: the encoded image noised to that step's level."""
    t = scheduler.timesteps[prepared.first_step]
    return add_noise(scheduler, prepared.latents.expand_as(noise), noise, t.expand(noise.shape[0]))


def inpaint_channels(model: Any, image: Tensor | None, known: Tensor | None, canvas_px: tuple[int, int]) -> Tensor:
    """The extra input of an inpainting model (9-channel UNet): (1, 1 + C, h, w), the mask (1 = repaint) then the
    latents of the image with the repainted pixels set to 0 (mid-grey), as diffusers' inpaint pipelines build them
    (pixel mask binarised at 0.5, then taken per latent cell). No image: everything is repainted."""
    height, width = canvas_px
    if image is None:
        image = torch.zeros(1, 3, height, width)
    keep = torch.zeros(1, 1, height, width) if known is None else (known > 0.5).float()
    with torch.no_grad():
        masked = model.codec.encode((image * keep).to(model.device)).float()
    repaint = 1.0 - torch.nn.functional.interpolate(keep, size=masked.shape[2:], mode="nearest")
    return torch.cat([repaint.to(masked.device), masked], dim=1)


def check_image_start(start: ImageStart, model: Any, height: int, width: int, sync: bool) -> dict[str, Any]:
    """An image start against the run's canvas and model; returns what the metadata records about it."""
    if not isinstance(start, ImageStart):
        raise InvalidInputError(
            f"image must be an ImageStart (see upscale, outpaint, inpaint), got {type(start).__name__}"
        )
    if start.size != (height, width):
        raise InvalidInputError(
            f"the image is {start.size[1]}×{start.size[0]} px but the canvas is {width}×{height} px; they must match"
        )
    if sync and model.inpaint_channels:
        raise InvalidInputError("SyncDiffusion does not run with an inpainting model (9-channel UNet) yet")
    sampler = start.conditional
    if model.inpaint_channels and sampler is not None and sampler.name != "blend" and start.known is not None:
        raise InvalidInputError(
            f"the {sampler.name} sampler does not run with an inpainting model (9-channel UNet): it sees the kept part "
            "through its own inputs and nothing is blended; leave the sampler at blend"
        )
    return {
        "mode": "img2img",
        **start.record,
        "strength": float(start.strength),
        "feather": float(start.feather),
        "noise_inversion_steps": int(start.noise_inversion_steps),
        **conditional_record(start),
    }


def conditional_record(start: ImageStart) -> dict[str, Any]:
    """What the recipe records about the conditional sampler: nothing for the blend (so a blended run's recipe is
    the one it was before samplers existed) or without a known region, else its settings."""
    sampler = start.conditional
    if start.known is None or sampler is None or sampler.name == "blend":
        return {}
    return sampler.record()
