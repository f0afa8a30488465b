"""The sphere on the one engine: perspective views as index-map tasks, and the fill of the cells no view reads.

:func:`sphere_layout` turns a canvas height, the model's window and a field of view into the task list
:func:`~multidiffusion.core.engine.sampling.sample` takes (each task's F_i a gather, Eq. 5 a scatter-add) and a
:class:`StepFromViews` hook that makes every cell no view reads follow its representative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.engine.weights import WEIGHT_KINDS, profile
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.density import sphere_density
from multidiffusion.core.sphere.maps import footprint, gather_index, reduced_grid, representatives
from multidiffusion.core.sphere.orientations import covering_orientations
from multidiffusion.core.sphere.projection import Orientation
from multidiffusion.core.types import ViewTask


@dataclass(frozen=True)
class SphereLayout:
    """The views of a sphere and what the canvas needs besides them.

    Attributes:
        height: Canvas rows H (latent cells); the canvas is H × 2H.
        window: View side, latent cells.
        fov: Field of view of every view, degrees.
        orientations: One per task, in task order.
        tasks: The (view, condition, weight, index, spread) tasks, one per orientation.
        representatives: long (H · 2H,): the read cell whose value each cell takes (itself when read).
        read: bool (H, 2H): the cells some view reads.
    """

    height: int
    window: int
    fov: float
    orientations: tuple[Orientation, ...]
    tasks: tuple[ViewTask, ...]
    representatives: Tensor
    read: Tensor

    @property
    def density(self) -> float:
        """κ, a view's centre pixel angle over a canvas cell's (:func:`~.density.sphere_density`)."""
        return sphere_density(self.height, self.window, self.fov)


def sphere_layout(
    height: int,
    window: int,
    fov: float,
    *,
    overlap: float = 0.5,
    weights: str = "gaussian",
    pole_roll: float = 0.0,
    condition: int = 0,
    orientations: Sequence[Orientation] | None = None,
    reduce: bool = True,
) -> SphereLayout:
    """The tasks of an H × 2H equirectangular canvas covered by ``window`` × ``window`` perspective views.

    Args:
        height: Canvas rows H, latent cells (> 0); the canvas has 2H columns.
        window: View side, latent cells (the model's native window).
        fov: Field of view of each view, degrees, (0, 180).
        overlap: Fraction of a view shared with its neighbours (:func:`covering_orientations`).
        weights: Per-pixel weight of a view: ``uniform``, ``feathered`` or ``gaussian`` ramps over the whole view.
        pole_roll: Roll of the pole views, degrees.
        condition: The condition index of every task.
        orientations: The views' orientations, instead of :func:`covering_orientations`.
        reduce: Read the canvas through :func:`~multidiffusion.core.sphere.maps.reduced_grid` (even density); False
            reads every equirectangular cell (for the measurement that shows why not).

    Raises:
        InvalidInputError: bad sizes or weights, or views that leave part of the sphere unseen.
    """
    if not isinstance(height, int) or height < 2:
        raise InvalidInputError(f"the sphere's canvas height must be at least 2 latent cells, got {height!r}")
    if not isinstance(window, int) or window < 2:
        raise InvalidInputError(f"the view window must be at least 2 latent cells, got {window!r}")
    if weights not in WEIGHT_KINDS:
        raise InvalidInputError(f"unknown weights {weights!r}; choose one of: {', '.join(WEIGHT_KINDS)}")
    chosen = list(orientations) if orientations is not None else covering_orientations(fov, overlap, pole_roll)
    seen = footprint(chosen, fov, height)
    if not bool(seen.all()):
        raise InvalidInputError(
            f"{int((~seen).sum())} cells of the sphere lie outside every view; widen the fov ({fov}°) or add views"
        )
    ramp = profile(window, window // 2, weights, taper_start=True, taper_end=True)
    weight = (ramp[:, None] * ramp[None, :]).float()
    grid = reduced_grid(height) if reduce else torch.arange(2 * height * height)
    indices = [grid[gather_index(o, fov, window, height)] for o in chosen]
    read = torch.zeros(height * 2 * height, dtype=torch.bool)
    for index in indices:
        read[index] = True
    reps = representatives(read.reshape(height, 2 * height), grid)
    unread = (~read).nonzero().reshape(-1)
    tasks = []
    for index in indices:
        tasks.append(ViewTask(View(0, 0, window, window), condition, weight, index, _spread(index, unread, reps)))
    return SphereLayout(height, window, fov, tuple(chosen), tuple(tasks), reps, read.reshape(height, 2 * height))


def _spread(index: Tensor, unread: Tensor, reps: Tensor) -> Tensor:
    """(2, K) pairs (unread cell, pixel) for every pixel of this view that reads the unread cell's representative."""
    order = torch.argsort(index, stable=True)
    ordered = index[order]
    seen = torch.zeros(reps.numel(), dtype=torch.bool)
    seen[index] = True
    unread = unread[seen[reps[unread]]]  # only the cells whose representative this view reads
    targets = reps[unread]
    lo = torch.searchsorted(ordered, targets, right=False)
    hi = torch.searchsorted(ordered, targets, right=True)
    counts = hi - lo
    cells = torch.repeat_interleave(unread, counts)
    starts = torch.repeat_interleave(lo, counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    pixels = order[starts + offsets]
    return torch.stack([cells, pixels])


class StepFromViews:
    """View hook that makes the scheduler step from the views' fused crops X instead of x_t (docs/design.md §3).

    It returns a copy of the crops unchanged, which tells the engine to fuse them like the model outputs. A cell some
    view reads gets back its own value (a weighted mean of copies of it); a cell no view reads gets, through the
    tasks' ``spread`` pairs, exactly its representative's, as its model output does. So every cell follows its
    representative's trajectory from the first step on, whatever its own initial noise (or a stochastic scheduler's
    fresh noise) was, and the finished canvas has no cell the views never shaped.
    """

    def __call__(self, x: Tensor, context: Any) -> Tensor:
        """(T·N, C, h, w) crops → an equal new tensor."""
        return x.clone()
