"""Finished equirectangular canvases seen as perspective views: how docs/sphere.md measures the sphere.

Nearest-cell reprojection (the views' own F_i), so a measured view holds canvas values unchanged: interpolation would
smooth them and bias the variance and correlation it is meant to measure.
"""

from __future__ import annotations

from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.maps import gather_index
from multidiffusion.core.sphere.projection import Orientation


def reproject(canvas: Tensor, orientation: Orientation, fov: float, size: int) -> Tensor:
    """A ``size`` × ``size`` perspective view of equirectangular canvases (N, C, H, 2H): (N, C, size, size)."""
    if canvas.ndim != 4 or canvas.shape[-1] != 2 * canvas.shape[-2]:
        raise InvalidInputError(f"an equirectangular canvas is (N, C, H, 2H), got {tuple(canvas.shape)}")
    n, c, height, _ = canvas.shape
    index = gather_index(orientation, fov, size, height).to(canvas.device)
    return canvas.reshape(n, c, -1)[:, :, index].reshape(n, c, size, size)
