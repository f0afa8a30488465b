"""Views: the windows F_i of MultiDiffusion (paper Eq. 3) and their layout on the canvas.

All sizes here are in latent cells. A view may wrap around the canvas horizontally (360° panoramas):
its columns are then taken modulo the canvas width. Rows never wrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidInputError


@dataclass(frozen=True)
class View:
    """A window on the canvas, in latent cells.

    Attributes:
        top: First row, ``0 <= top`` and ``top + height <= canvas height``.
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
    ``stride``), so every column is covered the same number of times give or take one.
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
) -> list[View]:
    """Lay sliding windows over a ``height`` × ``width`` latent canvas so every cell is covered.

    Windows start every ``stride`` cells; the last window of each row and column is flush with the
    right/bottom edge (so sizes that are not ``window + k·stride`` leave no uncovered strip). A canvas
    smaller than the window in a dimension gets one view of the canvas size in that dimension. With
    ``circular=True`` the columns wrap around (see :func:`_wrapped_starts`).

    Args:
        height: Canvas rows, latent cells, > 0.
        width: Canvas columns, latent cells, > 0.
        window: View size in latent cells, an int or (rows, cols).
        stride: Step between view starts in latent cells, an int or (rows, cols); ``0 < stride <= window``.
        circular: Wrap views around horizontally.

    Returns:
        Views in row-major order (top to bottom, then left to right), all of the same size.

    Raises:
        InvalidInputError: non-positive sizes, or a stride that is non-positive or larger than the window.
    """
    win = (window, window) if isinstance(window, int) else tuple(window)
    step = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"canvas size must be positive, got {height}×{width} latent cells")
    check_layout_args(win, step)
    view_h, view_w = min(win[0], height), min(win[1], width)
    tops = _starts(height, win[0], step[0])
    lefts = _wrapped_starts(width, win[1], step[1]) if circular else _starts(width, win[1], step[1])
    views = [View(top, left, view_h, view_w) for top in tops for left in lefts]
    if not views:  # pragma: no cover - unreachable by construction; guard against future edits
        raise InvalidInputError("the layout produced no view")
    return views
