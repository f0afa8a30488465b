"""Shifted non-overlapping windows: one tiling per step, its offset moving from step to step (SpotDiffusion).

SpotDiffusion (Frolov et al. 2024) denoises a single tiling of the canvas at each step and shifts the
tiling between steps, so no view edge stays at one place long enough to become a seam. Cost: about
``⌈size / window⌉`` views per axis per step instead of ``(size − window) / stride + 1``.

Offsets here are deterministic in the step index, not drawn at random as in SpotDiffusion: a Kronecker
(additive-recurrence) sequence with the golden ratio for columns and √2 for rows spreads the tile edges
evenly over the columns within a few steps (a low-discrepancy sequence), where random draws can put
consecutive steps' edges on the same column; and the run's generator is left untouched, so a stochastic
scheduler draws the same noise stream as with a fixed layout.

Edges of a canvas that does not wrap: the tiles cut by the canvas border are moved inside it, flush with
the border, so every view has the full window size; they overlap their neighbour by the shift there and
are fused with it by the usual weights. On a wrapped axis (a 360° canvas, ``circular=True``, wraps the
columns; ``wrap=(rows, cols)`` names either or both axes) the tiling goes round the circle instead.
"""

from __future__ import annotations

import math

from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.engine.views import View, Wrap, check_layout_args, resolve_wrap
from multidiffusion.core.engine.weights import view_weights
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import ViewTask

# Per-axis step of the offset, in windows: (rows, columns). The golden ratio's conjugate is the 1-D sequence
# of lowest discrepancy (panoramas shift along columns); √2 − 1 keeps the rows' sequence apart from it.
_ALPHA = (math.sqrt(2.0) - 1.0, (math.sqrt(5.0) - 1.0) / 2.0)


def shift_offset(step_index: int, window: tuple[int, int]) -> tuple[int, int]:
    """Offset (rows, columns) in latent cells of step ``step_index``'s tiling, each in ``[0, window)``.

    ``⌊frac(0.5 + k α) · window⌋`` per axis: step 0 is shifted by half a window, and the first steps' tile
    edges fall between the earlier ones (low discrepancy): with a 16-cell window the column offsets run
    8, 1, 11, 5, 15, 9, 3, 13, 7, 0, …
    """
    return tuple(int(((0.5 + step_index * a) % 1.0) * w) % w for a, w in zip(_ALPHA, window, strict=True))  # type: ignore[return-value]


def _tile_starts(size: int, window: int, offset: int, circular: bool) -> list[int]:
    """Starts of one axis' tiles: the grid ``offset + k · window``; border tiles moved inside (or wrapped round)."""
    if size <= window:
        return [0]
    if circular:
        # ⌈size / window⌉ tiles spread evenly round the circle (exactly ``window`` apart when it divides size).
        count = math.ceil(size / window)
        return sorted({((k * size) // count + offset) % size for k in range(count)})
    first = offset % window - window if offset % window else 0
    return sorted({min(max(start, 0), size - window) for start in range(first, size, window)})


def shifted_views(
    height: int,
    width: int,
    window: int | tuple[int, int],
    offset: tuple[int, int],
    *,
    circular: bool = False,
    wrap: Wrap | None = None,
) -> list[View]:
    """One tiling of a ``height`` × ``width`` latent canvas by full-size windows, shifted by ``offset``.

    Args:
        height: Canvas rows, latent cells, > 0.
        width: Canvas columns, latent cells, > 0.
        window: View size in latent cells, an int or (rows, cols); a canvas smaller than the window in a
            dimension gets one view of the canvas size there.
        offset: (rows, cols) shift of the tile grid in latent cells.
        circular: Wrap the tiling around horizontally (360° panoramas); the same as ``wrap=(False, True)``.
        wrap: Which axes wrap, (rows, cols).

    Returns:
        Views in row-major order; they cover every cell. Non-overlapping except next to a border (the tile
        there is moved flush with it) and on a wrapped axis whose size the window does not divide.
    """
    wrap_rows, wrap_cols = resolve_wrap(wrap, circular)
    win = (window, window) if isinstance(window, int) else tuple(window)
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"canvas size must be positive, got {height}×{width} latent cells")
    check_layout_args(win, win)
    view_h, view_w = min(win[0], height), min(win[1], width)
    tops = _tile_starts(height, win[0], offset[0], circular=wrap_rows)
    lefts = _tile_starts(width, win[1], offset[1], circular=wrap_cols)
    return [View(top, left, view_h, view_w) for top in tops for left in lefts]


def shifted_schedule(
    height: int,
    width: int,
    window: int | tuple[int, int],
    *,
    weights: str = "uniform",
    circular: bool = False,
    wrap: Wrap | None = None,
    condition: int = 0,
) -> TaskSchedule:
    """Shifted non-overlapping windows as a :class:`TaskSchedule`: step k tiles with :func:`shift_offset` (k).

    Args:
        height: Canvas rows, latent cells.
        width: Canvas columns, latent cells.
        window: View size in latent cells, an int or (rows, cols).
        weights: Weight kind (see :func:`~multidiffusion.core.engine.weights.view_weights`); it only matters where
            tiles overlap (next to a non-wrapping border).
        circular: 360° canvas (the same as ``wrap=(False, True)``).
        wrap: Which axes wrap, (rows, cols).
        condition: The condition index of every task.

    Returns:
        A schedule keyed by the (rows, cols) offset: at most ``window_h · window_w`` distinct layouts.
    """
    wrap = resolve_wrap(wrap, circular)
    win = (window, window) if isinstance(window, int) else tuple(window)
    check_layout_args(win, win)

    def build(offset: object) -> list[ViewTask]:
        views = shifted_views(height, width, win, offset, wrap=wrap)  # type: ignore[arg-type]
        maps = view_weights(views, height, width, weights, wrap=wrap)
        return [ViewTask(view, condition, w) for view, w in zip(views, maps, strict=True)]

    return TaskSchedule(key=lambda k: shift_offset(k, win), build=build)
