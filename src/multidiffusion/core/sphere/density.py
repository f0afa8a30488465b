"""The density that keeps a view's noise white: canvas cells per view pixel, κ (docs/sphere.md, "Density").

A view's pixels shrink towards its edges (a gnomonic pixel at tangent-plane offset (u, v) spans (1 + u² + v²)^(−3/2)
of its centre pixel's solid angle). Where the canvas is coarser than a view's pixels, two pixels of one view read one
cell and see its noise twice; where it is finer, the views read different cells and stop agreeing. Measured on the
exact model, the finished sphere keeps the field's variance when a canvas cell is about as large as the view's
weight-averaged pixel: κ* = :data:`DENSITY_FACTOR` / sqrt(weighted mean of the pixel areas).
"""

from __future__ import annotations

import math

import torch

from multidiffusion.core.engine.weights import profile
from multidiffusion.core.sphere.projection import pixel_pitch

DENSITY_FACTOR = 0.99
"""The measured correction of κ* (docs/sphere.md, "Density"): 0.96 left the variance up to 9 % high at fov 90°."""

DENSITY_TOLERANCE = 0.015
"""How far (relative) κ may be from κ*: at ±3.5 % a measured view's variance was 8 % off; at 0 %, 2.6 % at most."""


def sphere_density(height: int, window: int, fov: float) -> float:
    """κ = (angle of a view's centre pixel) / (angle of a canvas cell) = pixel_pitch(fov, window) · H / π."""
    return pixel_pitch(fov, window) * height / math.pi


def target_density(fov: float, window: int, weights: str = "gaussian") -> float:
    """κ* for views of ``fov`` degrees, ``window`` cells a side, with ``weights`` (the module docstring)."""
    t = math.tan(math.radians(fov) / 2.0)
    k = (torch.arange(window, dtype=torch.float64) + 0.5 - window / 2.0) * (2.0 * t / window)
    area = (1.0 + k[None, :] ** 2 + k[:, None] ** 2) ** -1.5
    ramp = profile(window, window // 2, weights, taper_start=True, taper_end=True)
    weight = ramp[:, None] * ramp[None, :]
    return DENSITY_FACTOR / math.sqrt(float((area * weight).sum() / weight.sum()))


def fov_for(height: int, window: int, weights: str = "gaussian") -> float:
    """The fov (degrees) at which an H-cell canvas has the density κ* for its views (bisection on κ / κ*)."""
    low, high = 1.0, 170.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if sphere_density(height, window, mid) < target_density(mid, window, weights):
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def height_for(fov: float, window: int, weights: str = "gaussian") -> int:
    """The canvas height (latent cells) at which views of ``fov`` degrees see the density κ*."""
    return max(2, round(target_density(fov, window, weights) * math.pi / pixel_pitch(fov, window)))


def density_error(height: int, window: int, fov: float, weights: str = "gaussian") -> float:
    """κ / κ* − 1: how far a canvas height and fov are from the density that keeps the noise white."""
    return sphere_density(height, window, fov) / target_density(fov, window, weights) - 1.0
