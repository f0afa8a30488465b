"""Directions on the sphere: equirectangular cells, view orientations and gnomonic (perspective) rays.

Axes: x east (right), y up (north), z forward (longitude 0 on the equator). Latitude φ ∈ [−90°, 90°], longitude
λ ∈ [−180°, 180°). An equirectangular canvas of H rows × 2H columns puts row r at φ = 90° − (r + ½)·180°/H (row 0 is
the northern edge) and column c at λ = −180° + (c + ½)·180°/H, so one cell spans 180°/H of latitude and of longitude,
and longitude wraps (column 2H is column 0).

A view's orientation is (yaw, pitch, roll) in degrees: its optical axis points at longitude yaw, latitude pitch, and
roll turns the image about that axis (positive: the image content turns clockwise). With roll 0 and |pitch| < 90°
the view's up is the local north, as a camera held level; at a pole, "north" is undefined and roll 0 means the
view's up points along longitude yaw + 180° (north pole) or yaw (south pole): see docs/sphere.md for the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError


@dataclass(frozen=True)
class Orientation:
    """Where a view looks, in degrees.

    Attributes:
        yaw: Longitude of the optical axis, any real (taken modulo 360°).
        pitch: Latitude of the optical axis, in [−90, 90].
        roll: Turn of the image about its axis.
    """

    yaw: float
    pitch: float
    roll: float = 0.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.yaw, self.pitch, self.roll)):
            raise InvalidInputError(f"a view orientation must be finite degrees, got {self}")
        if not -90.0 <= self.pitch <= 90.0:
            raise InvalidInputError(f"a view's pitch must be in −90…90 degrees, got {self.pitch}")


def rotation(orientation: Orientation) -> Tensor:
    """The camera-to-world rotation R (3, 3), float64: world = R @ camera, camera axes (right, up, forward).

    R = R_y(yaw) · R_x(−pitch) · R_z(−roll): roll about the optical axis first, then tilt up by pitch, then turn to yaw.
    """
    y, p, r = (math.radians(v) for v in (orientation.yaw, orientation.pitch, orientation.roll))
    cy, sy, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    yaw = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]], dtype=torch.float64)
    pitch = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]], dtype=torch.float64)
    roll = torch.tensor([[cr, sr, 0.0], [-sr, cr, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return yaw @ pitch @ roll


def pixel_pitch(fov: float, size: int) -> float:
    """Tangent-plane spacing of a gnomonic view's pixels, 2·tan(fov / 2) / size: the angle in radians one pixel spans
    at the view's centre (it spans cos²θ of that radially at θ off the axis)."""
    return 2.0 * math.tan(math.radians(fov) / 2.0) / size


def view_rays(orientation: Orientation, fov: float, size: int) -> Tensor:
    """Unit world directions of a ``size`` × ``size`` gnomonic view's pixel centres: float64 (size, size, 3).

    Pixel (i, j) (row i down, column j right) lies on the tangent plane at u = (j + ½ − size/2)·p,
    v = (size/2 − i − ½)·p, p = :func:`pixel_pitch`; ``fov`` (degrees, 0 < fov < 180) is the angle between the
    outer edges of the first and last column.
    """
    if not 0.0 < fov < 180.0:
        raise InvalidInputError(f"a view's field of view must be in (0, 180) degrees, got {fov}")
    p = pixel_pitch(fov, size)
    k = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2.0
    u = (k * p)[None, :].expand(size, size)
    v = (-k * p)[:, None].expand(size, size)
    cam = torch.stack([u, v, torch.ones_like(u)], dim=-1)
    cam = cam / cam.norm(dim=-1, keepdim=True)
    return cam @ rotation(orientation).T


def cell_directions(height: int) -> Tensor:
    """Unit directions of the cell centres of an H × 2H equirectangular canvas: float64 (H, 2H, 3)."""
    lat = math.pi / 2 - (torch.arange(height, dtype=torch.float64) + 0.5) * math.pi / height
    lon = -math.pi + (torch.arange(2 * height, dtype=torch.float64) + 0.5) * math.pi / height
    phi, lam = lat[:, None].expand(height, 2 * height), lon[None, :].expand(height, 2 * height)
    return torch.stack([phi.cos() * lam.sin(), phi.sin(), phi.cos() * lam.cos()], dim=-1)


def nearest_cells(directions: Tensor, height: int) -> Tensor:
    """Flat index ``row · 2H + col`` of the equirectangular cell containing each direction (..., 3) → (...) long.

    The cell containing a direction is the nearest cell centre in (latitude, longitude); longitude wraps, so a
    direction at λ = 180° − ε and one at −180° + ε land in the last and first columns, which are neighbours.
    """
    d = directions / directions.norm(dim=-1, keepdim=True)
    lat = torch.asin(d[..., 1].clamp(-1.0, 1.0))
    lon = torch.atan2(d[..., 0], d[..., 2])
    rows = torch.floor((math.pi / 2 - lat) / math.pi * height).long().clamp(0, height - 1)
    cols = torch.floor((lon + math.pi) / math.pi * height).long() % (2 * height)
    return rows * (2 * height) + cols
