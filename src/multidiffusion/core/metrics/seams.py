"""Seam figures: how continuous a canvas stays across the columns where views end (docs/theory.md, docs/layouts.md).

A seam is a column pair (c, c + 1) that a view edge separates: one side was denoised by views the other
side did not see. On the exact Gaussian-field model the lag-1 correlation of such a pair, pooled over
samples, drops toward 0 for independent tiles and stays at the interior value for a seam-free method.

On a wrapped axis (a 360° panorama, a texture that tiles) there is one more pair: the last row or column
with the first, across the wrap (:func:`wrap_correlation`). Rows are measured like columns on the
transposed canvas (``axis="y"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.oracle.stats import neighbour_correlation


def edge_pairs(views: Iterable[View], width: int, *, axis: str = "x", wrap: bool = False) -> tuple[int, ...]:
    """Left columns c of the pairs (c, c + 1) that a view edge separates: a view starts at c + 1 or ends at c.

    Args:
        views: Views on a canvas ``width`` columns wide (latent cells); wrapped views (360°) are taken
            modulo the width.
        width: Canvas columns (rows with ``axis="y"``).
        axis: ``x``: column pairs; ``y``: row pairs (c is then a row, ``width`` the canvas height).
        wrap: Count the wrap-around pair (width − 1, 0) too, as c = width − 1, when a view edge lies there.

    Returns:
        Sorted c in ``[0, width − 2]`` (``[0, width − 1]`` with ``wrap``).
    """
    if axis not in ("x", "y"):
        raise InvalidInputError(f"axis must be 'x' or 'y', got {axis!r}")
    pairs = set()
    for v in views:
        start, size = (v.left, v.width) if axis == "x" else (v.top, v.height)
        if size >= width:
            continue  # a view across the whole canvas has no inner edge on this axis
        pairs.add((start - 1) % width)
        pairs.add((start + size - 1) % width)
    return tuple(sorted(c for c in pairs if wrap or c < width - 1))


def wrap_correlation(images: Tensor, mean: Tensor | float = 0.0, *, axis: str = "x") -> Tensor:
    """Lag-1 correlation of every neighbour pair on a wrapped axis, the pair across the wrap last.

    Args:
        images: (N, C, H, W) canvases.
        mean: Their known mean μ, a float or (N, C) (see
            :func:`~multidiffusion.core.oracle.stats.neighbour_correlation`).
        axis: ``x``: column pairs, pooled over rows; ``y``: row pairs, pooled over columns.

    Returns:
        float64 (W,) for ``x`` ((H,) for ``y``): r_c of the pair (c, c + 1 mod W); r_{W−1} is the pair
        (W − 1, 0) across the wrap.
    """
    if axis not in ("x", "y"):
        raise InvalidInputError(f"axis must be 'x' or 'y', got {axis!r}")
    x = images if axis == "x" else images.transpose(-1, -2)
    return neighbour_correlation(torch.cat([x, x[..., :1]], dim=-1), mean)


@dataclass(frozen=True)
class SeamFigures:
    """Lag-1 horizontal correlations of canvases at view edges and away from them.

    Attributes:
        per_pair: Correlation of every column pair (c, c + 1), pooled over canvases, channels and rows: (W − 1,).
        edges: The pairs' left columns c counted as view edges.
        boundary: Mean correlation over the edge pairs.
        interior: Mean correlation over the other pairs; NaN when every pair is an edge.
        worst: The lowest correlation of any pair.
    """

    per_pair: Tensor
    edges: tuple[int, ...]
    boundary: float
    interior: float
    worst: float

    @property
    def ratio(self) -> float:
        """boundary / interior (NaN when there is no interior pair)."""
        return self.boundary / self.interior


def seam_figures(images: Tensor, edges: Sequence[int], mean: Tensor | float = 0.0) -> SeamFigures:
    """Seam figures of canvases (N, C, H, W) about their known mean (see :func:`neighbour_correlation`)."""
    r = neighbour_correlation(images, mean)
    mask = torch.zeros(r.shape[0], dtype=torch.bool)
    mask[list(edges)] = True
    boundary = float(r[mask].mean()) if bool(mask.any()) else math.nan
    interior = float(r[~mask].mean()) if bool((~mask).any()) else math.nan
    return SeamFigures(r, tuple(edges), boundary, interior, float(r.min()))
