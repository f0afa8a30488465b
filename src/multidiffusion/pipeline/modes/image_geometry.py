"""The canvas of a run that starts from an image (upscale, outpaint, inpaint), checked from the image's size and the
model's geometry alone: no pixels and no weights are needed, so the command line makes these checks before the model
loads (on the geometry read from its configs) and the pipeline makes the same ones after (on the loaded model's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multidiffusion.adapters.loading.geometry import ModelGeometry
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.modes.image_start import scaled_size
from multidiffusion.pipeline.settings.checks import check_canvas_pixels

MARGINS: tuple[str, ...] = ("left", "right", "top", "bottom")
"""The sides an outpaint extends, in the order its keywords and options list them."""


def check_kept_image(size: tuple[int, int], geometry: ModelGeometry, what: str = "image") -> None:
    """An image kept as it is (outpaint, inpaint) must have sides, (height, width) px, in multiples of the model's
    latent cell: its pixels are encoded cell for cell and put back bit for bit."""
    height, width = size
    g = geometry.granularity_px
    if height % g or width % g:
        fit = (max(g, width // g * g), max(g, height // g * g))
        raise InvalidInputError(
            f"the {what} is {width}×{height} px; this model needs sides in multiples of {g} px: crop or "
            f"resize it (e.g. to {fit[0]}×{fit[1]})"
        )


def check_margin(name: str, value: Any, geometry: ModelGeometry) -> int:
    """An outpaint margin: a whole number of pixels ≥ 0, a multiple of the model's latent cell."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"the {name} margin must be a whole number of pixels ≥ 0, got {value!r}")
    g = geometry.granularity_px
    if value % g:
        raise InvalidInputError(
            f"the {name} margin must be a multiple of {g} px for this model, got {value} "
            f"(nearest: {round(value / g) * g})"
        )
    return value


def checked_margins(geometry: ModelGeometry, margins: Mapping[str, Any]) -> dict[str, int]:
    """An outpaint's ``margins`` (side name → px), each checked by :func:`check_margin`, at least one > 0."""
    checked = {side: check_margin(side, margins.get(side, 0), geometry) for side in MARGINS}
    if not any(checked.values()):
        raise InvalidInputError("give at least one margin to outpaint (left, right, top or bottom, in px)")
    return checked


def upscale_canvas(geometry: ModelGeometry, image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(height, width) px of an upscale of an image of ``image_size`` (height, width) px: each side × ``scale``,
    rounded to the model's latent cell; within the canvas limit."""
    height, width = scaled_size(*image_size, scale, geometry.granularity_px)
    check_canvas_pixels(height, width)
    return height, width


def outpaint_canvas(
    geometry: ModelGeometry, image_size: tuple[int, int], margins: Mapping[str, Any]
) -> tuple[int, int]:
    """(height, width) px of an outpaint: the image (sides in multiples of the latent cell) plus ``margins`` (side
    name → px, multiples of the latent cell, at least one > 0); within the canvas limit."""
    checked = checked_margins(geometry, margins)
    check_kept_image(image_size, geometry)
    height = image_size[0] + checked["top"] + checked["bottom"]
    width = image_size[1] + checked["left"] + checked["right"]
    check_canvas_pixels(height, width)
    return height, width


def inpaint_canvas(geometry: ModelGeometry, image_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) px of an inpaint: the image's own, whose sides must be multiples of the latent cell."""
    check_kept_image(image_size, geometry)
    check_canvas_pixels(*image_size)
    return image_size
