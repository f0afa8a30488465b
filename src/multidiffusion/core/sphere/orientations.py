"""A covering set of view orientations on the sphere: rings of latitude, and one view at each pole.

Rings sit every ``step`` = fov · (1 − overlap) degrees of latitude from pole to pole (the step rounded so the rings
split 180° evenly); the ring at latitude p holds ceil(360° · cos p / step) views evenly spread in longitude, every
other ring turned by half its spacing so the views' corners interleave. The poles hold one view each: ``pole_roll``
turns it about its axis (docs/sphere.md measures which roll and why one view).
"""

from __future__ import annotations

import math

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.projection import Orientation


def ring_pitches(fov: float, overlap: float) -> list[float]:
    """Latitudes (degrees) of the rings, south pole first: −90, …, 90, evenly spaced by at most fov · (1 − overlap)."""
    if not 0.0 < fov < 180.0:
        raise InvalidInputError(f"the field of view must be in (0, 180) degrees, got {fov}")
    if not 0.0 <= overlap < 1.0:
        raise InvalidInputError(f"the view overlap must be in [0, 1), got {overlap}")
    step = fov * (1.0 - overlap)
    gaps = max(2, math.ceil(180.0 / step - 1e-9))
    return [-90.0 + 180.0 * k / gaps for k in range(gaps + 1)]


def covering_orientations(fov: float, overlap: float = 0.5, pole_roll: float = 0.0) -> list[Orientation]:
    """The views' orientations: one per pole (pitch ±90°, yaw 0, roll ``pole_roll``) and the rings between.

    Args:
        fov: Field of view of each view in degrees, (0, 180).
        overlap: Fraction of a view's field of view it shares with its neighbour along a ring and between rings,
            [0, 1); 0.5 is the half-window stride of a panorama.
        pole_roll: Roll of the two pole views, degrees.

    Returns:
        Orientations, south pole first, ring by ring (west to east), north pole last.
    """
    pitches = ring_pitches(fov, overlap)
    step = fov * (1.0 - overlap)
    out = [Orientation(0.0, -90.0, pole_roll)]
    for k, pitch in enumerate(pitches[1:-1]):
        count = max(3, math.ceil(360.0 * math.cos(math.radians(pitch)) / step - 1e-9))
        offset = 0.5 * (k % 2)
        out += [Orientation(-180.0 + 360.0 * (j + offset) / count, pitch, 0.0) for j in range(count)]
    out.append(Orientation(0.0, 90.0, pole_roll))
    return out
