"""The values of Gradio's image editor as arrays, and back, without any web framework: the layers painted on the
Regions canvas, the picture and the part painted over it on the Image tab, a blank canvas."""

from __future__ import annotations

from typing import Any

import numpy as np

from multidiffusion.core.errors import InvalidInputError


def blank(height: int, width: int) -> np.ndarray:
    """A white (H, W, 3) uint8 canvas."""
    return np.full((height, width, 3), 255, dtype=np.uint8)


def over(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """An RGBA ``layer`` over an RGB ``base`` (painted pixels replace the base)."""
    out = base.copy()
    painted = layer[..., 3] > 0
    out[painted] = layer[painted][:, :3]
    return out


def blank_canvas(height: int, width: int) -> dict[str, Any]:
    """The editor's value for a white (H, W) canvas with nothing painted; the editor takes its size."""
    return {"background": blank(height, width), "layers": [], "composite": None}


def paint_layer(layer: np.ndarray) -> dict[str, Any]:
    """The editor's value that lays ``layer`` (H, W, 4) as the one paint layer of the canvas it holds, which must
    already be a cleared, then (H, W) :func:`blank_canvas`.

    Gradio's editor (6.x) lays a layer unscaled, centred on the union of everything it holds: the canvas it was
    created with and each background since the last clear. So a layer given with a background of a new size, or on
    a canvas not cleared first, lands off its place, and the masks show at two places. No background here, so the
    canvas keeps its size, and no composite: the editor would show a composite in place of the background, the
    paint baked into it where no eraser reaches. The editor renders the composite itself."""
    return {"background": None, "layers": [layer], "composite": None}


def painting(value: Any) -> np.ndarray:
    """The painted layers of an ImageEditor value, merged: (H, W, 4) uint8 (transparent where nothing is painted)."""
    layers = value.get("layers") if isinstance(value, dict) else None
    if not layers:
        raise InvalidInputError("paint at least one region on the canvas")
    merged = np.zeros((*np.asarray(layers[0]).shape[:2], 4), dtype=np.uint8)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.shape[2] == 3:
            layer = np.concatenate([layer, np.full((*layer.shape[:2], 1), 255, dtype=np.uint8)], axis=2)
        painted = layer[..., 3] > 0
        merged[painted] = layer[painted]
    return merged


def painting_or_blank(value: Any) -> np.ndarray:
    """:func:`painting`, or a transparent layer of the canvas's size where nothing is painted yet (its background's,
    or its composite's)."""
    try:
        return painting(value)
    except InvalidInputError:
        for key in ("background", "composite"):
            image = value.get(key) if isinstance(value, dict) else None
            if image is not None:
                return np.zeros((*np.asarray(image).shape[:2], 4), dtype=np.uint8)
        raise


def picture_and_mask(value: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(picture (H, W, 3) uint8, mask (H, W) uint8 white where painted, or None) from the Image tab's editor."""
    if not isinstance(value, dict) or value.get("background") is None:
        raise InvalidInputError("upload a picture first")
    background = np.asarray(value["background"])
    picture = background[..., :3].astype(np.uint8) if background.ndim == 3 else np.repeat(background[..., None], 3, 2)
    mask = None
    layers = value.get("layers") or []
    if layers:
        painted = np.zeros(picture.shape[:2], dtype=bool)
        for layer in layers:
            layer = np.asarray(layer)
            painted |= layer[..., 3] > 0 if layer.shape[2] == 4 else layer.any(axis=2)
        if painted.any():
            mask = np.where(painted, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(picture), mask
