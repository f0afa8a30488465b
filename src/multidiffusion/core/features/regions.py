"""Region-based generation (MultiDiffusion §4.2): views × regions, each pair weighted by the region's mask.

A region is a prompt painted onto part of the canvas by a mask or a box. Every (view, region) pair is one
task of the engine, with weight W = view profile ⊗ (region mask inside the view), so Eq. 5 becomes the
mask-weighted least-squares blend of the regions' predictions; a pair whose weight is zero everywhere in
its view is skipped (no denoiser call).

Masks go to the latent grid by area: each latent cell takes the mean of its f × f pixels (f = the codec's
scale factor), so a box or mask aligned to the grid stays binary and a soft or unaligned edge becomes a
fractional weight. Where regions overlap their predictions are averaged in proportion to their weights.
The background fills the rest with weight max(0, 1 − Σ foreground).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.core.engine.crop import crop, view_indices
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import ViewTask


@dataclass(frozen=True)
class Region:
    """A prompt painted onto part of the canvas.

    Attributes:
        prompt: What the region shows.
        mask: The pixel mask, white (1) where the region is; exactly one of ``mask`` and ``box``. A torch
            tensor (H, W) or channel-first (C, H, W); a NumPy array (H, W) or channel-last (H, W, C); or a
            PIL image. Floats take values in [0, 1]; ``uint8`` 0–255 and ``uint16`` 0–65535 are scaled; bool
            and 0/1 integers as they are. With an alpha channel that is not fully opaque the alpha is the mask
            (a brush painted on a transparent layer), otherwise the luminance (see :func:`mask_tensor`).
        box: (x0, y0, x1, y1) in pixels, x1 and y1 exclusive, inside the canvas.
        negative_prompt: Overrides the run's negative prompt for this region.
        guidance_scale: Overrides the run's guidance scale for this region.
        weight: Multiplies the mask (how strongly the region claims its cells), > 0.
        name: Optional label, unique within a layout (for legends and error messages).
        control: Control networks for this region's views only (the pipeline's
            :class:`~multidiffusion.pipeline.customise.control_spec.ControlSpec`), on top of the run's own.
        loras: LoRAs for this region's views only (:class:`~multidiffusion.adapters.customise.lora.LoraSpec`), on top of
        the     run's own; views are batched by LoRA set.
    """

    prompt: str
    mask: Tensor | None = None
    box: tuple[int, int, int, int] | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    weight: float = 1.0
    name: str | None = None
    control: tuple[Any, ...] = ()
    loras: tuple[Any, ...] = ()

    @property
    def label(self) -> str:
        return self.name or self.prompt


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def mask_tensor(mask: Any, where: str = "mask") -> Tensor:
    """A mask as the user gave it → (H, W) float32 in [0, 1].

    Args:
        mask: Torch tensor (H, W) or (C, H, W); NumPy array (H, W) or (H, W, C); a PIL image (any mode);
            C in 1…4 (grey, grey + alpha, RGB, RGBA).
        where: Names the mask in error messages (e.g. ``regions[2].mask``).

    Raises:
        InvalidInputError: another type or shape, integers that are neither 8/16-bit nor 0/1, float values
            outside [0, 1], or non-finite values.
    """
    channel_first = isinstance(mask, Tensor)
    if channel_first:
        array = (mask.detach().float() if mask.is_floating_point() else mask.detach()).cpu().numpy()
    elif hasattr(mask, "getbands"):  # a PIL image: its array is channel-last
        array = np.asarray(mask.convert("L") if mask.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV") else mask)
    elif isinstance(mask, np.ndarray):
        array = mask
    else:
        raise InvalidInputError(
            f"{where} must be a torch tensor, a NumPy array or a PIL image, got {type(mask).__name__}"
        )
    if array.ndim == 3:
        array = np.moveaxis(array, 0, -1) if channel_first else array
        if not 1 <= array.shape[-1] <= 4:
            layout = "(C, H, W)" if channel_first else "(H, W, C)"
            raise InvalidInputError(f"{where} has {array.shape[-1]} channels; a mask is {layout} with C in 1…4")
    elif array.ndim != 2:
        raise InvalidInputError(f"{where} must be 2-D (H, W) or have a channel axis, got shape {array.shape}")
    values = _unit_values(array, where)
    if values.ndim == 3:
        colour, alpha = (values[..., :-1], values[..., -1]) if values.shape[-1] in (2, 4) else (values, None)
        if alpha is not None and float(alpha.min()) < 1:
            values = alpha
        elif colour.shape[-1] == 3:
            values = colour @ np.asarray(_LUMA)
        else:
            values = colour[..., 0]
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def _unit_values(array: np.ndarray, where: str) -> np.ndarray:
    """Array values as float64 in [0, 1] by the dtype's convention (see :func:`mask_tensor`)."""
    if array.dtype == np.bool_:
        return array.astype(np.float64)
    if array.dtype == np.uint8:
        return array / 255.0
    if array.dtype == np.uint16:
        return array / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        if array.size and not np.isin(array, (0, 1)).all():
            raise InvalidInputError(
                f"{where}: integer masks are uint8 (0–255), uint16 (0–65535) or hold only 0 and 1; "
                f"got {array.dtype} values {int(array.min())}…{int(array.max())}"
            )
        return array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"{where} has dtype {array.dtype}; use floats in [0, 1], uint8, uint16 or bool")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInputError(f"{where} holds NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise InvalidInputError(
            f"{where}: float mask values must lie in [0, 1], got {values.min():g}…{values.max():g} "
            "(for 0–255 values pass a uint8 array)"
        )
    return values


def pixel_mask(region: Region, height: int, width: int, where: str = "region") -> Tensor:
    """The region's (H, W) float32 mask in pixels, validated against a ``height`` × ``width`` canvas.

    ``where`` names the region in error messages (e.g. ``regions[2]``).
    """
    if (region.mask is None) == (region.box is None):
        raise InvalidInputError(f"{where}: give exactly one of mask and box")
    if not region.weight > 0:
        raise InvalidInputError(f"{where}.weight must be > 0, got {region.weight!r}")
    if region.box is not None:
        if len(region.box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in region.box):
            raise InvalidInputError(f"{where}.box must be four whole pixel numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = region.box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InvalidInputError(
                f"{where}.box {list(region.box)} must satisfy 0 ≤ x0 < x1 ≤ {width} and 0 ≤ y0 < y1 ≤ {height}"
            )
        mask = torch.zeros(height, width)
        mask[y0:y1, x0:x1] = 1.0
        return mask
    mask = mask_tensor(region.mask, f"{where}.mask")
    if tuple(mask.shape) != (height, width):
        raise InvalidInputError(
            f"{where}.mask is {mask.shape[1]}×{mask.shape[0]} px (width×height); the canvas is {width}×{height} px"
        )
    if float(mask.max()) == 0:
        raise InvalidInputError(f"{where}.mask is empty (all zero)")
    return mask


def to_latent_grid(masks: Tensor, scale_factor: int) -> Tensor:
    """(R, H, W) pixel masks → (R, H/f, W/f): the mean over each latent cell's f × f pixels."""
    if scale_factor == 1:
        return masks.float()
    return F.avg_pool2d(masks[:, None].float(), scale_factor)[:, 0]


def with_background(foreground: Tensor) -> Tensor:
    """Prepend the background weight max(0, 1 − Σ foreground) to (R, h, w) foreground weights."""
    background = (1 - foreground.sum(0, keepdim=True)).clamp(min=0)
    return torch.cat([background, foreground])


def region_tasks(views: Sequence[View], region_weights: Tensor, view_weights: Tensor) -> list[ViewTask]:
    """Tasks of every (view, region) pair whose weight is not zero everywhere in the view.

    Args:
        views: The layout, latent cells.
        region_weights: (R, H, W) per-region weights on the latent canvas; region r is condition r.
        view_weights: (V, h, w) view profiles (uniform or feathered), one per view.

    Returns:
        Tasks in view-major order with weight = profile ⊗ region weight inside the view.
    """
    _, height, width = region_weights.shape
    index = view_indices(views, height, width)
    h, w = views[0].height, views[0].width
    inside = crop(region_weights[None], index, (h, w))  # (V·1, R, h, w)
    tasks = []
    for v, view in enumerate(views):
        for r in range(region_weights.shape[0]):
            weight = inside[v, r] * view_weights[v]
            if bool((weight > 0).any()):
                tasks.append(ViewTask(view, r, weight))
    return tasks
