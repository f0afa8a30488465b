"""Tests for the per-view weights W_i (paper Eq. 3, 5; docs/design.md §9 core tier)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multidiffusion.core import (
    WEIGHT_KINDS,
    FusionPlan,
    InvalidInputError,
    View,
    layout_views,
    panorama_tasks,
    view_weights,
)
from multidiffusion.core.engine.weights import profile
from tests.helpers.numerics import assert_close_scaled

SETTINGS = settings(max_examples=60, deadline=None)
# Relative to max|expected| = 1 (weights lie in (0, 1]; tests/helpers/numerics.py): a few float32 operations per entry
# (profile products, normalisation by the maximum); worst measured 7.9e-8 on AVX2 and AVX-512 kernels.
REL_WEIGHTS = 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


@st.composite
def weighted_layouts(draw: st.DrawFn):
    height = draw(st.integers(1, 60))
    width = draw(st.integers(1, 60))
    win_h = draw(st.integers(1, 24))
    win_w = draw(st.integers(1, 24))
    stride = (draw(st.integers(1, win_h)), draw(st.integers(1, win_w)))
    kind = draw(st.sampled_from(WEIGHT_KINDS))
    circular = draw(st.booleans())
    return height, width, (win_h, win_w), stride, kind, circular


def sides(v: View, height: int, width: int, circular: bool) -> tuple[bool, bool, bool, bool]:
    """Which sides of a view lie on the canvas border: (top, bottom, left, right)."""
    wraps = circular and v.width < width
    return (
        v.top == 0,
        v.top + v.height == height,
        not wraps and v.left == 0,
        not wraps and v.left + v.width == width,
    )


def check_profiles(p: torch.Tensor, start_border: torch.Tensor, end_border: torch.Tensor, kind: str) -> None:
    """1-D profiles (V, n) of V views: border ends at the maximum, interior ends below the centre, symmetric
    when both ends are interior. ``start_border`` / ``end_border``: bool (V,)."""
    top = p.amax(dim=1)
    tol = 1e-6
    assert bool(((p[:, 0] - top).abs() <= tol)[start_border].all())
    assert bool(((p[:, -1] - top).abs() <= tol)[end_border].all())
    n = p.shape[1]
    if kind != "uniform" and n >= 3:
        centre = p[:, n // 2]
        assert bool((p[:, 0] < centre)[~start_border].all())
        assert bool((p[:, -1] < centre)[~end_border].all())
    both = ~start_border & ~end_border
    assert_close_scaled(p[both], p[both].flip(1), rel=REL_WEIGHTS, what="interior profile symmetry")


@pytest.mark.float_sensitive
@SETTINGS
@given(weighted_layouts())
def test_weight_maps(args) -> None:
    height, width, window, stride, kind, circular = args
    views = layout_views(height, width, window, stride, circular=circular)
    maps = view_weights(views, height, width, kind, circular=circular)
    h, w = views[0].height, views[0].width
    assert maps.shape == (len(views), h, w)
    assert maps.dtype == torch.float32
    assert bool((maps > 0).all()) and bool((maps <= 1).all())
    if kind == "uniform":
        assert bool((maps == 1).all())
    flags = torch.tensor([sides(v, height, width, circular) for v in views], dtype=torch.bool)  # (V, 4)
    top_b, bottom_b, left_b, right_b = flags.unbind(1)
    rows, cols = maps.amax(dim=2), maps.amax(dim=1)  # (V, h), (V, w): the profiles, up to scale
    # Rank one: each map is the outer product of its row and column profiles ...
    outer = rows[:, :, None] * cols[:, None, :] / maps.amax(dim=(1, 2))[:, None, None]
    assert_close_scaled(maps, outer, rel=REL_WEIGHTS, what="map vs outer product of its profiles")
    # ... and those are the axis profiles with the border sides untapered.
    expected = torch.stack(
        [
            profile(h, h // 2, kind, taper_start=not tb, taper_end=not bb)[:, None]
            * profile(w, w // 2, kind, taper_start=not lb, taper_end=not rb)[None, :]
            for tb, bb, lb, rb in flags.tolist()
        ]
    ).float()
    assert_close_scaled(maps, expected, rel=REL_WEIGHTS, what="map vs float64 axis profiles")
    check_profiles(rows, top_b, bottom_b, kind)
    check_profiles(cols, left_b, right_b, kind)
    interior = ~flags.any(dim=1)
    assert_close_scaled(maps[interior], maps[interior].flip(1, 2), rel=REL_WEIGHTS, what="interior map symmetry")
    if circular and w < width:  # no horizontal side is a border
        assert not bool(left_b.any() or right_b.any())
        assert_close_scaled(maps, maps.flip(2), rel=REL_WEIGHTS, what="circular map symmetry")
        if kind != "uniform" and w >= 3:
            assert bool((cols[:, 0] < cols[:, w // 2]).all())
            assert bool((cols[:, -1] < cols[:, w // 2]).all())


@pytest.mark.float_sensitive
@pytest.mark.parametrize("kind", ["feathered", "gaussian"])
def test_interior_view_is_a_symmetric_bump(kind: str) -> None:
    # 3 × 3 views of 9 cells on a 25 × 25 canvas: the centre view has no border side.
    views = layout_views(25, 25, 9, 8)
    assert len(views) == 9
    maps = view_weights(views, 25, 25, kind)
    centre = maps[4]
    assert views[4] == View(8, 8, 9, 9)
    torch.testing.assert_close(centre, centre.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(centre, centre.flip(1), rtol=0, atol=0)
    assert float(centre[4, 4]) == 1.0
    assert float(centre[0, 4]) < 1.0 and float(centre[4, 0]) < 1.0
    # The top-left view keeps full weight on its top and left sides, tapers towards the bottom and right.
    corner = maps[0]
    assert bool((corner[0, : 9 // 2 + 1] == 1).all()) and bool((corner[: 9 // 2 + 1, 0] == 1).all())
    assert float(corner[-1, 0]) < 1.0 and float(corner[0, -1]) < 1.0


@pytest.mark.float_sensitive
def test_feathered_ramp_values() -> None:
    # One view fully inside a canvas, ramp 2: linear (i + 1) / (ramp + 1) at both ends.
    views = [View(3, 3, 1, 7)]
    maps = view_weights(views, 10, 20, "feathered", ramp=(0, 2))
    expected = torch.tensor([1 / 3, 2 / 3, 1, 1, 1, 2 / 3, 1 / 3])
    assert_close_scaled(maps[0, 0], expected, rel=REL_WEIGHTS, what="feathered ramp")


def test_circular_single_view_spanning_width_is_untapered() -> None:
    # The view is the whole width: it has no horizontal neighbour, so nothing to blend.
    maps = view_weights([View(0, 0, 4, 6)], 4, 6, "feathered", circular=True)
    assert bool((maps == 1).all())


def test_circular_tapers_views_at_the_seam() -> None:
    views = layout_views(8, 32, 8, 4, circular=True)
    flat = view_weights(views, 8, 32, "feathered", circular=False)
    wrapped = view_weights(views, 8, 32, "feathered", circular=True)
    # Without wrap-around the first view's left side is a border; with it, it is not.
    assert float(flat[0, 0, 0]) == 1.0
    assert float(wrapped[0, 0, 0]) < 1.0
    # Every wrapped view has the same map: the layout is a rotation.
    assert all(torch.equal(wrapped[0], m) for m in wrapped)


@pytest.mark.parametrize("kind", ["triangle", "Uniform", ""])
def test_unknown_kind_raises(kind: str) -> None:
    with pytest.raises(InvalidInputError):
        view_weights(layout_views(16, 16, 8, 4), 16, 16, kind)


@SETTINGS
@given(weighted_layouts())
def test_summed_weight_positive_everywhere(args) -> None:
    height, width, window, stride, kind, circular = args
    tasks = panorama_tasks(height, width, window, stride, weights=kind, circular=circular)
    plan = FusionPlan(tasks, height, width, "cpu")  # raises if a cell had zero total weight
    assert plan.denominator.shape == (1, 1, height, width)
    assert bool((plan.denominator > 0).all())
