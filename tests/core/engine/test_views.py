"""Property tests for the view layout (docs/design.md §4 coverage, §9 core tier)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multidiffusion.core import InvalidInputError, View, layout_views, view_indices

SETTINGS = settings(max_examples=80, deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@st.composite
def layout_args(draw: st.DrawFn) -> tuple[int, int, tuple[int, int], tuple[int, int]]:
    """(height, width, (window rows, cols), (stride rows, cols)), latent cells."""
    height = draw(st.integers(1, 200))
    width = draw(st.integers(1, 200))
    win_h = draw(st.integers(1, 80))
    win_w = draw(st.integers(1, 80))
    stride_h = draw(st.integers(1, win_h))
    stride_w = draw(st.integers(1, win_w))
    return height, width, (win_h, win_w), (stride_h, stride_w)


def coverage(views: list[View], height: int, width: int) -> torch.Tensor:
    """How many views cover each canvas cell, (height, width)."""
    index = view_indices(views, height, width)
    return torch.bincount(index.reshape(-1), minlength=height * width).reshape(height, width)


def axis_starts(views: list[View]) -> tuple[list[int], list[int]]:
    """Distinct tops and lefts, sorted."""
    return sorted({v.top for v in views}), sorted({v.left for v in views})


def check_linear_axis(starts: list[int], size: int, window: int, stride: int, view_size: int) -> None:
    """One non-wrapping axis: first at 0, strictly increasing, gaps <= stride, last flush with the edge."""
    assert view_size == min(window, size)
    assert starts[0] == 0
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0 < g <= stride for g in gaps), gaps
    if size >= window:
        assert starts[-1] + window == size  # flush with the bottom/right edge
    else:
        assert starts == [0]  # one view of the canvas size
    assert all(0 <= s and s + view_size <= size for s in starts)
    if (size - view_size) % stride == 0:
        assert starts == list(range(0, size - view_size + 1, stride))


def check_row_major(views: list[View], tops: list[int], lefts: list[int], view_h: int, view_w: int) -> None:
    """The layout is the full grid tops × lefts in row-major order, one size, no duplicates."""
    assert views == [View(t, left, view_h, view_w) for t in tops for left in lefts]


@SETTINGS
@given(layout_args())
def test_linear_layout_covers_every_cell(args: tuple[int, int, tuple[int, int], tuple[int, int]]) -> None:
    height, width, window, stride = args
    views = layout_views(height, width, window, stride)
    view_h, view_w = views[0].height, views[0].width
    assert all((v.height, v.width) == (view_h, view_w) for v in views)
    tops, lefts = axis_starts(views)
    check_row_major(views, tops, lefts, view_h, view_w)
    check_linear_axis(tops, height, window[0], stride[0], view_h)
    check_linear_axis(lefts, width, window[1], stride[1], view_w)
    cov = coverage(views, height, width)
    assert int(cov.min()) >= 1
    # No view wraps without circular=True.
    assert all(v.left + v.width <= width for v in views)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(1, 200), st.integers(1, 80), st.data())
def test_int_window_is_square_tuple(height: int, width: int, window: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, window))
    for circular in (False, True):
        square = layout_views(height, width, (window, window), (stride, stride), circular=circular)
        assert layout_views(height, width, window, stride, circular=circular) == square


def test_canvas_smaller_than_window_gives_one_view_of_canvas_size() -> None:
    assert layout_views(5, 7, 16, 8) == [View(0, 0, 5, 7)]
    assert layout_views(5, 7, 16, 8, circular=True) == [View(0, 0, 5, 7)]
    # Only the width is smaller: one column of views, each as wide as the canvas.
    views = layout_views(40, 7, 16, 8)
    assert {v.width for v in views} == {7}
    assert {v.left for v in views} == {0}
    assert [v.top for v in views] == [0, 8, 16, 24]


def test_last_window_flush_when_not_a_multiple_of_stride() -> None:
    # (size - window) = 13 is not a multiple of 8: the reference implementations leave cells 61..63 uncovered.
    views = layout_views(16, 64 + 13, 64, 8)
    lefts = [v.left for v in views]
    assert lefts == [0, 8, 13]
    assert int(coverage(views, 16, 77).min()) >= 1


@SETTINGS
@given(layout_args())
def test_circular_layout(args: tuple[int, int, tuple[int, int], tuple[int, int]]) -> None:
    height, width, window, stride = args
    views = layout_views(height, width, window, stride, circular=True)
    view_h, view_w = views[0].height, views[0].width
    tops, lefts = axis_starts(views)
    check_row_major(views, tops, lefts, view_h, view_w)
    check_linear_axis(tops, height, window[0], stride[0], view_h)  # rows never wrap
    cov = coverage(views, height, width)
    assert int(cov.min()) >= 1
    if width <= window[1]:
        assert lefts == [0]
        assert view_w == width
        return
    assert view_w == window[1]
    assert lefts[0] == 0
    assert all(0 <= left < width for left in lefts)
    cyclic_gaps = [b - a for a, b in zip(lefts, [*lefts[1:], lefts[0] + width], strict=True)]
    assert all(0 < g <= stride[1] for g in cyclic_gaps), cyclic_gaps
    assert sum(cyclic_gaps) == width
    if width % stride[1] == 0:  # diffusers' circular_padding layout
        assert lefts == [k * stride[1] for k in range(width // stride[1])]
    # Views whose columns run past the right edge (and continue at column 0) are the ones with left + w > W.
    index = view_indices(views, height, width)
    cols = index[:, :view_w] % width  # (V, w): the columns of each view's first row
    left = torch.tensor([v.left for v in views])
    assert torch.equal(cols, (left[:, None] + torch.arange(view_w)[None, :]) % width)
    wraps = (cols[:, 1:] < cols[:, :-1]).any(dim=1)
    assert torch.equal(wraps, left + view_w > width)
    # Every column is covered equally often, give or take one (row 0 is covered by the top row of views only).
    assert int(cov[0].max()) - int(cov[0].min()) <= 1


def test_circular_wraps_example() -> None:
    views = layout_views(8, 32, 8, 8, circular=True)
    assert [v.left for v in views] == [0, 8, 16, 24]
    assert not any(v.left + v.width > 32 for v in views)  # stride == window: nothing wraps
    views = layout_views(8, 32, 16, 8, circular=True)
    assert [v.left for v in views] == [0, 8, 16, 24]
    assert [v.left + v.width > 32 for v in views] == [False, False, False, True]


@pytest.mark.parametrize(
    ("height", "width", "window", "stride"),
    [
        (32, 32, 8, 0),
        (32, 32, 8, -1),
        (32, 32, 8, 9),
        (32, 32, 0, 1),
        (32, 32, -4, 1),
        (0, 32, 8, 4),
        (32, 0, 8, 4),
        (-1, 32, 8, 4),
        (32, -5, 8, 4),
        (32, 32, (8, 8), (4, 0)),
        (32, 32, (8, 8), (9, 4)),
        (32, 32, (8, 0), (4, 4)),
        (32, 32, (8, 4), (4, 5)),
    ],
)
@pytest.mark.parametrize("circular", [False, True])
def test_invalid_layout_raises(height: int, width: int, window, stride, circular: bool) -> None:
    with pytest.raises(InvalidInputError):
        layout_views(height, width, window, stride, circular=circular)
