"""Seam figures: how continuous a canvas stays across the columns where views end (docs/theory.md, docs/layouts.md).

A seam is a column pair (c, c + 1) that a view edge separates: one side was denoised by views the other
side did not see. On the exact Gaussian-field model the lag-1 correlation of such a pair, pooled over
samples, drops toward 0 for independent tiles and stays at the interior value for a seam-free method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .gaussian_field import neighbour_correlation
from .views import View


def edge_pairs(views: Iterable[View], width: int) -> tuple[int, ...]:
    """Left columns c of the pairs (c, c + 1) that a view edge separates: a view starts at c + 1 or ends at c.

    Args:
        views: Views on a canvas ``width`` columns wide (latent cells); wrapped views (360°) are taken
            modulo the width.
        width: Canvas columns.

    Returns:
        Sorted c in ``[0, width − 2]``; the wrap-around pair (width − 1, 0) is not among them.
    """
    pairs = set()
    for v in views:
        if v.width >= width:
            continue  # a view across the whole canvas has no inner column edge
        if v.left > 0:
            pairs.add(v.left - 1)
        end = (v.left + v.width - 1) % width
        if end < width - 1:
            pairs.add(end)
    return tuple(sorted(pairs))


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
