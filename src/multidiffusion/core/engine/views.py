"""Views: the windows F_i of MultiDiffusion (paper Eq. 3) and their layout on the canvas.

All sizes here are in latent cells. A view may wrap around the canvas on either axis or both (a 360°
panorama wraps the columns; a seamless texture wraps both): its rows are then taken modulo the canvas
height and its columns modulo the canvas width. Which axes wrap is a :data:`Wrap` pair (rows, cols).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from multidiffusion.core.errors import InvalidInputError

Wrap = tuple[bool, bool]
"""Which canvas axes wrap around: (rows, cols). ``(False, True)`` is a 360° panorama, ``(True, True)`` a
texture that tiles the plane."""

NO_WRAP: Wrap = (False, False)
TILE_NAMES: tuple[str, ...] = ("x", "y", "xy")


def parse_tile(tile: str | None) -> Wrap:
    """The :data:`Wrap` pair of a tiling name: None → no wrap, ``x`` → columns, ``y`` → rows, ``xy`` → both.

    Raises:
        InvalidInputError: any other value.
    """
    if tile is None:
        return NO_WRAP
    if not isinstance(tile, str) or tile not in TILE_NAMES:
        raise InvalidInputError(f"unknown tile {tile!r}; choose one of: {', '.join(TILE_NAMES)} (or none)")
    return ("y" in tile, "x" in tile)


def tile_name(wrap: Wrap) -> str | None:
    """The inverse of :func:`parse_tile`: ``x``, ``y``, ``xy`` or None."""
    name = ("x" if wrap[1] else "") + ("y" if wrap[0] else "")
    return name or None


def resolve_wrap(wrap: Wrap | None = None, circular: bool = False) -> Wrap:
    """One :data:`Wrap` pair from the two keywords the layout functions accept.

    ``circular=True`` (the older keyword) means "wrap the columns"; ``wrap`` names both axes. Given both,
    ``wrap`` must wrap the columns too.

    Raises:
        InvalidInputError: ``circular=True`` with a ``wrap`` that leaves the columns unwrapped.
    """
    if wrap is None:
        return (False, bool(circular))
    if isinstance(wrap, str) or len(wrap) != 2:
        raise InvalidInputError(f"wrap must be a (rows, cols) pair of booleans, got {wrap!r}")
    rows, cols = (bool(a) for a in wrap)
    if circular and not cols:
        raise InvalidInputError(f"circular=True wraps the columns, but wrap={wrap!r} does not; give one of them")
    return (rows, cols)


@dataclass(frozen=True)
class View:
    """A window on the canvas, in latent cells.

    Attributes:
        top: First row, ``0 <= top < canvas height``. Without wrap-around ``top + height <= canvas height``;
            with rows wrapping, the rows past the bottom edge continue at row 0.
        left: First column, ``0 <= left < canvas width``. With wrap-around, ``left + width`` may exceed
            the canvas width; the columns past the right edge continue at column 0.
        height: Rows in the view.
        width: Columns in the view.
    """

    top: int
    left: int
    height: int
    width: int


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride`` cells, the last one flush with the far edge."""
    if size <= window:
        return [0]
    count = math.ceil((size - window) / stride) + 1
    return [min(k * stride, size - window) for k in range(count)]


def _wrapped_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets on a circular axis: ``ceil(size / stride)`` views spread evenly round the circle.

    When ``stride`` divides ``size`` the starts are ``0, stride, 2·stride, …``, the layout of diffusers'
    ``circular_padding``; otherwise the gaps are ``floor`` or ``ceil`` of ``size / count`` (never more than
    ``stride``), so every row or column is covered the same number of times give or take one.
    """
    if size <= window:
        return [0]
    count = math.ceil(size / stride)
    return [(k * size) // count for k in range(count)]


def check_layout_args(window: tuple[int, int], stride: tuple[int, int]) -> None:
    """Raise :class:`InvalidInputError` unless ``window`` and ``stride`` (rows, cols) make a layout."""
    for axis, win, step in zip(("height", "width"), window, stride, strict=True):
        if win <= 0:
            raise InvalidInputError(f"window {axis} must be positive, got {win} latent cells")
        if step <= 0:
            raise InvalidInputError(f"stride must be positive, got {step} latent cells")
        if step > win:
            raise InvalidInputError(
                f"stride ({step}) must not exceed the window ({win}): cells between windows would stay uncovered"
            )


def layout_views(
    height: int,
    width: int,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    *,
    circular: bool = False,
    wrap: Wrap | None = None,
) -> list[View]:
    """Lay sliding windows over a ``height`` × ``width`` latent canvas so every cell is covered.

    Windows start every ``stride`` cells; the last window of each row and column is flush with the
    right/bottom edge (so sizes that are not ``window + k·stride`` leave no uncovered strip). A canvas
    smaller than the window in a dimension gets one view of the canvas size in that dimension. On a
    wrapped axis the windows go round the circle instead (see :func:`_wrapped_starts`).

    Args:
        height: Canvas rows, latent cells, > 0.
        width: Canvas columns, latent cells, > 0.
        window: View size in latent cells, an int or (rows, cols).
        stride: Step between view starts in latent cells, an int or (rows, cols); ``0 < stride <= window``.
        circular: Wrap views around horizontally (the same as ``wrap=(False, True)``).
        wrap: Which axes wrap, (rows, cols); see :func:`resolve_wrap` for giving it with ``circular``.

    Returns:
        Views in row-major order (top to bottom, then left to right), all of the same size.

    Raises:
        InvalidInputError: non-positive sizes, or a stride that is non-positive or larger than the window.
    """
    wrap_rows, wrap_cols = resolve_wrap(wrap, circular)
    win = (window, window) if isinstance(window, int) else tuple(window)
    step = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"canvas size must be positive, got {height}×{width} latent cells")
    check_layout_args(win, step)
    view_h, view_w = min(win[0], height), min(win[1], width)
    tops = _wrapped_starts(height, win[0], step[0]) if wrap_rows else _starts(height, win[0], step[0])
    lefts = _wrapped_starts(width, win[1], step[1]) if wrap_cols else _starts(width, win[1], step[1])
    views = [View(top, left, view_h, view_w) for top in tops for left in lefts]
    if not views:  # pragma: no cover - unreachable by construction; guard against future edits
        raise InvalidInputError("the layout produced no view")
    return views
