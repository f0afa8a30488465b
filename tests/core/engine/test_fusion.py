"""Crop / paste and the Eq. 5 fusion against naive loops (docs/design.md §3, §9 core tier)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multidiffusion.core import (
    FusionPlan,
    InvalidInputError,
    View,
    ViewTask,
    crop,
    fuse,
    layout_views,
    panorama_tasks,
    paste_add,
    view_indices,
)
from tests.helpers.numerics import assert_close_scaled

# Relative to max|expected| (tests/helpers/numerics.py). Eq. 5 is a float32 weighted sum over the views covering a cell
# (up to window² of them at stride 1), divided by the summed weights; values |x| ≈ 4 (randn). Worst measured over the
# Hypothesis examples on AVX2 and AVX-512 kernels: 6.1e-7 (fused crops vs canvas).
REL_SUM = 1e-5

SETTINGS = settings(max_examples=50, deadline=None)


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.float_sensitive]


@st.composite
def canvases(draw: st.DrawFn):
    """(height, width, views, circular, seed) for a small random layout."""
    height = draw(st.integers(1, 24))
    width = draw(st.integers(1, 24))
    window = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    stride = (draw(st.integers(1, window[0])), draw(st.integers(1, window[1])))
    circular = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return height, width, layout_views(height, width, window, stride, circular=circular), circular, seed


def naive_crop(canvas: torch.Tensor, v: View) -> torch.Tensor:
    """F_i(J) by slicing: roll the wrapped columns to the front, then cut."""
    rolled = torch.roll(canvas, shifts=-v.left, dims=3)
    return rolled[:, :, v.top : v.top + v.height, : v.width]


def view_cols(v: View, width: int) -> torch.Tensor:
    return (v.left + torch.arange(v.width)) % width


def naive_coverage(views: list[View], height: int, width: int) -> torch.Tensor:
    count = torch.zeros(height, width)
    for v in views:
        count[v.top : v.top + v.height, view_cols(v, width)] += 1
    return count


def naive_fuse(values: torch.Tensor, tasks: list[ViewTask], n: int, height: int, width: int) -> torch.Tensor:
    """Eq. 5 by a loop over views, in float64: value += W ⊗ o at the view, count += W, value / count."""
    c = values.shape[1]
    value = torch.zeros(n, c, height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    for i, task in enumerate(tasks):
        v = task.view
        rows = torch.arange(v.top, v.top + v.height)[:, None]
        cols = view_cols(v, width)[None, :]
        w = task.weight.to(torch.float64)
        o = values[i * n : (i + 1) * n].to(torch.float64)
        value[:, :, rows, cols] += w * o
        count[rows, cols] += w
    return value / count


@SETTINGS
@given(canvases())
def test_crop_then_paste_of_ones_is_coverage(args) -> None:
    height, width, views, _, _ = args
    n, c = 2, 3
    index = view_indices(views, height, width)
    size = (views[0].height, views[0].width)
    ones = crop(torch.ones(n, c, height, width), index, size)
    assert ones.shape == (len(views) * n, c, *size)
    acc = paste_add(torch.zeros(n, c, height, width), ones, index)
    expected = naive_coverage(views, height, width)
    assert torch.equal(acc, expected.expand(n, c, height, width))


@SETTINGS
@given(canvases())
def test_crop_and_paste_match_naive_slicing(args) -> None:
    height, width, views, _, seed = args
    n, c = 2, 3
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randn(n, c, height, width, generator=g)
    index = view_indices(views, height, width)
    size = (views[0].height, views[0].width)
    crops = crop(canvas, index, size)
    for i, v in enumerate(views):  # view-major: rows i·N … i·N + N − 1
        assert torch.equal(crops[i * n : (i + 1) * n], naive_crop(canvas, v))
    values = torch.randn(len(views) * n, c, *size, generator=g)
    acc = paste_add(torch.zeros(n, c, height, width), values, index)
    expected = torch.zeros(n, c, height, width)
    for i, v in enumerate(views):
        rolled = torch.roll(expected, shifts=-v.left, dims=3)
        rolled[:, :, v.top : v.top + v.height, : v.width] += values[i * n : (i + 1) * n]
        expected = torch.roll(rolled, shifts=v.left, dims=3)
    assert_close_scaled(acc, expected, rel=REL_SUM, what="paste_add vs naive slicing")


def test_crop_wraps_around_explicitly() -> None:
    canvas = torch.arange(10.0).reshape(1, 1, 1, 10)
    v = View(0, 7, 1, 5)
    out = crop(canvas, view_indices([v], 1, 10), (1, 5))
    assert out.flatten().tolist() == [7.0, 8.0, 9.0, 0.0, 1.0]


@SETTINGS
@given(canvases(), st.booleans())
def test_fuse_matches_naive_eq5(args, two_conditions: bool) -> None:
    height, width, views, _, seed = args
    n, c = 2, 3
    g = torch.Generator().manual_seed(seed)
    h, w = views[0].height, views[0].width
    tasks = [ViewTask(v, 0, 0.05 + torch.rand(h, w, generator=g)) for v in views]
    if two_conditions:  # a second condition on every other view, as region prompts make
        tasks += [ViewTask(v, 1, torch.rand(h, w, generator=g)) for v in views[::2]]
    values = torch.randn(len(tasks) * n, c, h, w, generator=g)
    plan = FusionPlan(tasks, height, width, "cpu")
    got = fuse(values, plan, n)
    assert got.shape == (n, c, height, width) and got.dtype == torch.float32
    assert_close_scaled(got, naive_fuse(values, tasks, n, height, width), rel=REL_SUM, what="fuse vs float64 Eq. 5")


@SETTINGS
@given(canvases(), st.sampled_from(["uniform", "feathered", "gaussian"]))
def test_fusing_consistent_crops_gives_the_canvas_back(args, kind: str) -> None:
    height, width, views, circular, seed = args
    window = (views[0].height, views[0].width)
    tasks = panorama_tasks(height, width, window, 1, weights=kind, circular=circular)
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randn(2, 3, height, width, generator=g)
    plan = FusionPlan(tasks, height, width, "cpu")
    assert_close_scaled(
        fuse(plan.crop(canvas, slice(None)), plan, 2), canvas, rel=REL_SUM, what="fused crops vs canvas"
    )


def test_fuse_uniform_is_plain_average() -> None:
    # Two 1×3 views overlapping on one column of a 1×5 canvas: the overlap is their mean.
    tasks = panorama_tasks(1, 5, (1, 3), (1, 2))
    assert [t.view.left for t in tasks] == [0, 2]
    values = torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]).reshape(2, 1, 1, 3)
    out = fuse(values, FusionPlan(tasks, 1, 5, "cpu"), 1)
    assert out.flatten().tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]


def test_plan_rejects_zero_weight_cells() -> None:
    # One view over the whole canvas whose weight is zero on the left half, and nothing else there.
    weight = torch.ones(4, 8)
    weight[:, :4] = 0
    with pytest.raises(InvalidInputError):
        FusionPlan([ViewTask(View(0, 0, 4, 8), 0, weight)], 4, 8, "cpu")
    # A region task that leaves one cell at zero while a full-weight view covers only part of the canvas.
    region = torch.ones(4, 4)
    region[0, 0] = 0
    tasks = [ViewTask(View(0, 0, 4, 4), 1, region), ViewTask(View(0, 4, 4, 4), 0, torch.ones(4, 4))]
    with pytest.raises(InvalidInputError):
        FusionPlan(tasks, 4, 8, "cpu")
    # The same region is fine once another view covers the zero cell.
    FusionPlan([*tasks, ViewTask(View(0, 0, 4, 4), 0, torch.ones(4, 4))], 4, 8, "cpu")


def test_plan_rejects_uncovered_cells() -> None:
    # Views that leave the right strip uncovered (the reference implementations' bug).
    tasks = [ViewTask(View(0, left, 4, 4), 0, torch.ones(4, 4)) for left in (0, 2)]
    with pytest.raises(InvalidInputError):
        FusionPlan(tasks, 4, 7, "cpu")


def test_plan_rejects_empty_tasks() -> None:
    with pytest.raises(InvalidInputError):
        FusionPlan([], 4, 4, "cpu")


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_plan_rejects_bad_weights(bad: float) -> None:
    weight = torch.ones(4, 4)
    weight[1, 1] = bad
    tasks = [ViewTask(View(0, 0, 4, 4), 0, weight), ViewTask(View(0, 0, 4, 4), 0, torch.ones(4, 4))]
    with pytest.raises(InvalidInputError):
        FusionPlan(tasks, 4, 4, "cpu")
