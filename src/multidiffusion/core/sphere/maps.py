"""Each view's F_i as an index map, and what the maps do to the canvas and its noise (docs/sphere.md).

F_i reads, for every pixel of a view, the one canvas cell that holds the pixel's direction (nearest cell): a gather
of h·w flat canvas indices, so Eq. 5 for it is the scatter-add the crops use, exact and with no interpolation (an
interpolating F_i would average canvas noise and shrink its variance below 1).

Two things the equirectangular canvas does to such maps:

- **Cells no view reads.** Near the poles a row of 2H cells circles a small ring of the sphere, so there are more
  cells than any view has pixels there. A cell no view reads has no term in Eq. 5; it takes the value of its
  *representative*, the nearest read cell on the sphere (:func:`representatives`), at every step.
- **Cells a view reads twice.** Towards a gnomonic view's edges its pixels shrink (by cos²θ radially at θ off the
  axis); where they are smaller than a cell, two pixels of one view read one cell and that view sees its noise
  duplicated (:func:`noise_figures` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.projection import Orientation, cell_directions, nearest_cells, rotation, view_rays


def gather_index(orientation: Orientation, fov: float, size: int, height: int) -> Tensor:
    """F_i of one view: the flat cell index (row · 2H + col) each of its pixels reads, long (size · size,) row-major."""
    return nearest_cells(view_rays(orientation, fov, size), height).reshape(-1)


def footprint(orientations: Sequence[Orientation], fov: float, height: int) -> Tensor:
    """Which cells' centres lie inside at least one view's field of view: bool (H, 2H)."""
    cells = cell_directions(height).reshape(-1, 3)
    half = math.tan(math.radians(fov) / 2.0)
    inside = torch.zeros(cells.shape[0], dtype=torch.bool)
    for o in orientations:
        cam = cells @ rotation(o)  # world → camera: Rᵀ d, row-wise
        z = cam[:, 2]
        ok = z > 0
        u, v = cam[:, 0] / z.clamp_min(1e-12), cam[:, 1] / z.clamp_min(1e-12)
        inside |= ok & (u.abs() <= half) & (v.abs() <= half)
    return inside.reshape(height, 2 * height)


def reduced_grid(height: int) -> Tensor:
    """The cell each cell of an H × 2H canvas stands for on a grid of even density (a reduced Gaussian grid).

    Row r (latitude φ_r) of the equirectangular canvas has 2H cells but circles only cos φ_r of the equator, so near
    the poles its cells are far narrower than tall. Here the row keeps n_r = max(1, round(2H · cos φ_r)) distinct
    cells, each a run of neighbouring equirectangular cells that all take the value of the one at the run's middle:
    every kept cell then spans about 180°/H in both directions, anywhere on the sphere. Without this, two views that
    look at the same point near a pole read different, independent cells a fraction of a pixel apart, and never agree
    (docs/sphere.md measures it).

    Returns:
        long (H · 2H,): the flat index of the kept cell each cell takes its value from (itself for kept cells).
    """
    width = 2 * height
    lat = torch.pi / 2 - (torch.arange(height, dtype=torch.float64) + 0.5) * torch.pi / height
    kept = torch.clamp(torch.round(width * torch.cos(lat)), min=1).long()  # (H,)
    cols = torch.arange(width, dtype=torch.float64)
    run = torch.floor((cols[None, :] + 0.5) * kept[:, None] / width)  # (H, 2H): which of the row's runs
    middle = torch.floor((run + 0.5) * width / kept[:, None]).long().clamp(0, width - 1)
    return (torch.arange(height)[:, None] * width + middle).reshape(-1)


def representatives(read: Tensor, grid: Tensor | None = None) -> Tensor:
    """For each cell of an (H, 2H) canvas, the flat index of the read cell that gives it its value.

    A read cell gives its own. Any other cell takes the read cell nearest on the sphere (great-circle distance) to the
    cell it stands for on ``grid`` (:func:`reduced_grid`; None: itself).

    Args:
        read: bool (H, 2H), the cells some view reads.
        grid: long (H · 2H,), the cell each cell stands for; None: the identity.

    Returns:
        long (H · 2H,) flat indices of read cells.

    Raises:
        InvalidInputError: no cell is read at all.
    """
    height = read.shape[0]
    flat = read.reshape(-1)
    grid = torch.arange(flat.numel()) if grid is None else grid
    hits = flat.nonzero().reshape(-1)
    if hits.numel() == 0:
        raise InvalidInputError("no view reads any cell of the canvas; give at least one view")
    nearest = torch.arange(flat.numel())
    wanted = torch.unique(grid)
    misses = wanted[~flat[wanted]]
    directions = cell_directions(height).reshape(-1, 3).float()
    known = directions[hits]
    for chunk in misses.split(1024):  # (chunk, read cells) cosines
        nearest[chunk] = hits[torch.argmax(directions[chunk] @ known.T, dim=1)]
    return nearest[grid]


@dataclass(frozen=True)
class NoiseFigures:
    """What a view sees of white canvas noise through its index map.

    Attributes:
        duplicated: Fraction of the view's pixels whose cell another pixel of the same view also reads.
        neighbour_correlation: Expected correlation of horizontally and vertically neighbouring pixels of the view's
            noise: the fraction of neighbour pairs reading one cell (0 for white noise).
        weighted_correlation: The same, each pair counted by the product of its two pixels' weights W_i: the
            correlation where the view's output counts in Eq. 5.
        variance: Expected variance of a pixel's noise (1: a nearest map never shrinks it).
    """

    duplicated: float
    neighbour_correlation: float
    weighted_correlation: float
    variance: float


def noise_figures(index: Tensor, size: int, weight: Tensor | None = None) -> NoiseFigures:
    """:class:`NoiseFigures` of one view's index map (size · size,) and weights (size, size), exactly (no sampling)."""
    grid = index.reshape(size, size)
    w = torch.ones(size, size, dtype=torch.float64) if weight is None else weight.to(torch.float64)
    counts = torch.bincount(index)
    duplicated = float((counts[index] > 1).double().mean())
    same = torch.cat([(grid[:, 1:] == grid[:, :-1]).reshape(-1), (grid[1:] == grid[:-1]).reshape(-1)]).double()
    pair_w = torch.cat([(w[:, 1:] * w[:, :-1]).reshape(-1), (w[1:] * w[:-1]).reshape(-1)])
    weighted = float((same * pair_w).sum() / pair_w.sum())
    return NoiseFigures(duplicated, float(same.mean()), weighted, 1.0)
