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

import torch
import torch.nn.functional as F
from torch import Tensor

from .crop import crop, view_indices
from .errors import InvalidInputError
from .types import ViewTask
from .views import View


@dataclass(frozen=True)
class Region:
    """A prompt painted onto part of the canvas.

    Attributes:
        prompt: What the region shows.
        mask: (H, W) pixel mask with values in [0, 1]; exactly one of ``mask`` and ``box``.
        box: (x0, y0, x1, y1) in pixels, x1 and y1 exclusive, inside the canvas.
        negative_prompt: Overrides the run's negative prompt for this region.
        guidance_scale: Overrides the run's guidance scale for this region.
        weight: Multiplies the mask (how strongly the region claims its cells), > 0.
        name: Optional label, unique within a layout (for legends and error messages).
    """

    prompt: str
    mask: Tensor | None = None
    box: tuple[int, int, int, int] | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    weight: float = 1.0
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.prompt


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
    mask = torch.as_tensor(region.mask, dtype=torch.float32)
    if tuple(mask.shape) != (height, width):
        raise InvalidInputError(f"{where}.mask is {tuple(mask.shape)} pixels; the canvas is ({height}, {width})")
    if not bool(torch.isfinite(mask).all()) or float(mask.min()) < 0 or float(mask.max()) > 1:
        raise InvalidInputError(f"{where}.mask values must lie in [0, 1]")
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
