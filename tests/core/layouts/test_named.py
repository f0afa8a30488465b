"""Layouts that change per step (TaskSchedule), shifted tiles, the named layouts and seam pairs (core tier)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from multidiffusion.core import InvalidInputError, View, ViewTask, panorama_tasks, sample
from multidiffusion.core.engine.crop import paste_add, view_indices
from multidiffusion.core.engine.fusion import FusionPlan
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.layouts.named import LAYOUT_NAMES, LAYOUTS, LayoutRecipe, evaluations_per_step, layout_tasks
from multidiffusion.core.layouts.shifted import shift_offset, shifted_schedule, shifted_views
from multidiffusion.core.metrics.seams import edge_pairs
from multidiffusion.core.types import HookContext
from tests.helpers.numerics import assert_close_scaled

# Relative to max|expected| (tests/helpers/numerics.py): 5 steps of Eq. 5 over ≤ 4 views per cell, |x| ≈ 3; measured 0
# here (the same kernels on both sides), float32 rounding of that loop is below 1e-6.
REL_LOOP = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")

N, C, H, W = 2, 3, 13, 22


class StepScheduler:
    """Diffusers-style scheduler whose step is x − 0.1·o."""

    init_noise_sigma = 1.0

    def __init__(self, steps: int = 5) -> None:
        self.timesteps = torch.arange(steps * 100, 0, -100)

    def scale_model_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    def step(self, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(prev_sample=x - 0.1 * model_output)


def denoiser(x: torch.Tensor, t: torch.Tensor, conds: Sequence[Any], views: Any = None) -> torch.Tensor:
    """Non-linear and position-dependent within the view, so a different layout gives a different result."""
    ramp = torch.linspace(0, 1, x.shape[-1])
    return torch.tanh(x) + ramp + float(t) / 1000


def coverage(views: Sequence[View], height: int, width: int) -> torch.Tensor:
    """How many views cover each cell: (height, width)."""
    count = torch.zeros(1, 1, height, width)
    ones = torch.ones(len(views), 1, views[0].height, views[0].width)
    return paste_add(count, ones, view_indices(views, height, width))[0, 0]


# --- shifted tiles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(13, 22), (16, 48), (8, 8), (5, 30), (40, 17)])
@pytest.mark.parametrize("circular", [False, True])
def test_shifted_tiles_cover_every_cell_with_full_windows(size, circular):
    height, width = size
    window = (8, 6)
    for k in range(12):
        offset = shift_offset(k, window)
        views = shifted_views(height, width, window, offset, circular=circular)
        assert {(v.height, v.width) for v in views} == {(min(8, height), min(6, width))}
        count = coverage(views, height, width)
        assert int(count.min()) >= 1
        assert all(0 <= v.top and v.top + v.height <= height and 0 <= v.left < width for v in views)
        if not circular:
            assert all(v.left + v.width <= width for v in views)


def test_shifted_tiles_overlap_only_next_to_the_border():
    """24 × 48 canvas, 8-cell windows shifted by (3, 5): inner cells are covered once; a tile moved flush with
    a border overlaps its neighbour (rows 3–7 and 16–18, columns 5–7 and 40–44)."""
    views = shifted_views(24, 48, 8, (3, 5))
    assert sorted({v.top for v in views}) == [0, 3, 11, 16]
    assert sorted({v.left for v in views}) == [0, 5, 13, 21, 29, 37, 40]
    count = coverage(views, 24, 48)
    assert bool((count[8:16, 8:40] == 1).all())
    assert bool((count[3:8, 8:40] == 2).all()) and bool((count[8:16, 40:45] == 2).all())
    assert int(count.max()) == 4  # a cell in a row overlap and a column overlap
    unshifted = coverage(shifted_views(16, 48, 8, (0, 0)), 16, 48)
    assert bool((unshifted == 1).all())  # a plain tiling when the offset is 0 and the window divides the size


def test_shifted_tiles_reject_bad_sizes():
    with pytest.raises(InvalidInputError, match="canvas size must be positive"):
        shifted_views(0, 16, 8, (0, 0))
    with pytest.raises(InvalidInputError, match="window width must be positive"):
        shifted_schedule(16, 16, (8, 0))


def test_circular_shifted_tiles_wrap():
    views = shifted_views(8, 48, 8, (0, 5), circular=True)
    assert [v.left for v in views] == [5, 13, 21, 29, 37, 45]  # the last one wraps: columns 45–47, 0–4
    assert bool((coverage(views, 8, 48) == 1).all())


def test_shift_offsets_are_deterministic_and_spread():
    """Offsets in [0, window); 16 steps of a 16-cell window use 15 distinct column offsets."""
    offsets = [shift_offset(k, (16, 16)) for k in range(16)]
    assert offsets == [shift_offset(k, (16, 16)) for k in range(16)]
    assert all(0 <= r < 16 and 0 <= c < 16 for r, c in offsets)
    assert [c for _, c in offsets[:10]] == [8, 1, 11, 5, 15, 9, 3, 13, 7, 0]
    assert len({c for _, c in offsets}) >= 15 and len({r for r, _ in offsets}) >= 12


# --- TaskSchedule in the sampling loop ------------------------------------------------------------------


def run(tasks, steps: int = 5, **kwargs) -> torch.Tensor:
    x_T = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(0))
    return sample(denoiser, StepScheduler(steps), x_T, tasks, [torch.zeros(N)], **kwargs)


def test_fixed_schedule_equals_the_task_list():
    tasks = panorama_tasks(H, W, 8, 4, weights="feathered")
    assert torch.equal(run(TaskSchedule.fixed(tasks)), run(tasks))


@pytest.mark.float_sensitive
def test_schedule_equals_a_loop_over_its_layouts():
    """Two layouts alternating step by step: the engine equals Eq. 5 with each step's own layout."""
    layouts = [panorama_tasks(H, W, 8, 4), panorama_tasks(H, W, 8, 7, weights="gaussian")]
    schedule = TaskSchedule(key=lambda k: k % 2, build=lambda key: layouts[key])
    out = run(schedule, view_batch_size=3)
    x = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(0))
    for k, t in enumerate(StepScheduler().timesteps):
        plan = FusionPlan(layouts[k % 2], H, W, "cpu")
        model_sum = torch.zeros_like(x)
        plan.accumulate(model_sum, denoiser(plan.crop(x, slice(None)), t, []), slice(None))
        x = x - 0.1 * plan.normalise(model_sum)  # Eq. 5 with this step's layout, then the step
    assert_close_scaled(out, x, rel=REL_LOOP, what="scheduled sample() vs a loop over its layouts")
    assert not torch.allclose(out, run(layouts[0]), atol=1e-3)  # the layout matters


def test_one_plan_per_distinct_layout_built_before_the_first_step():
    built: list[object] = []
    calls: list[int] = []
    layouts = [panorama_tasks(H, W, 8, 4), panorama_tasks(H, W, 8, 8)]

    def build(key):
        built.append(key)
        return layouts[key]

    def counting(x, t, conds, views=None):
        calls.append(len(built))
        return denoiser(x, t, conds)

    x_T = torch.zeros(N, C, H, W)
    sample(counting, StepScheduler(6), x_T, TaskSchedule(lambda k: int(k >= 2), build), [torch.zeros(N)])
    assert built == [0, 1]
    assert calls and set(calls) == {2}  # both plans exist before the denoiser is first called


def test_a_bad_layout_at_a_later_step_raises_before_any_work():
    calls: list[int] = []
    bad = [ViewTask(View(0, 0, 8, 8), 0, torch.ones(8, 8))]  # covers a corner only
    schedule = TaskSchedule(lambda k: k == 3, lambda late: bad if late else panorama_tasks(H, W, 8, 4))

    def counting(x, t, conds, views=None):
        calls.append(1)
        return x

    with pytest.raises(InvalidInputError, match="zero total view weight"):
        sample(counting, StepScheduler(), torch.zeros(N, C, H, W), schedule, [torch.zeros(N)])
    assert not calls


def test_hooks_see_each_steps_own_tasks():
    seen: list[tuple[int, int]] = []

    def record(x: torch.Tensor, context: HookContext) -> torch.Tensor:
        seen.append((context.step_index, len(context.tasks)))
        assert list(context.task_indices) == list(range(len(context.tasks)))
        return x

    schedule = shifted_schedule(H, W, 8)
    run(schedule, hooks=[record])
    assert seen == [(k, len(schedule.tasks_at(k))) for k in range(5)]


# --- named layouts and seam pairs -----------------------------------------------------------------------


def test_named_layouts():
    assert LAYOUT_NAMES == ("half-overlap", "quarter-overlap", "shifted")
    assert LAYOUTS["half-overlap"].stride_cells(64) == 32 and LAYOUTS["quarter-overlap"].stride_cells(64) == 48
    tasks = layout_tasks("half-overlap", 64, 256, 64)
    assert isinstance(tasks, list) and [t.view.left for t in tasks] == [0, 32, 64, 96, 128, 160, 192]
    shifted = layout_tasks("shifted", 64, 256, 64, circular=True, condition=1)
    assert isinstance(shifted, TaskSchedule)
    assert all(t.condition == 1 and t.view.width == 64 for t in shifted.tasks_at(3))
    assert evaluations_per_step(shifted) == 4.0  # 360°: exactly four tiles round 256 columns
    assert evaluations_per_step(layout_tasks("shifted", 64, 256, 64)) == pytest.approx(4.98)  # + one border tile
    with pytest.raises(InvalidInputError, match="unknown layout 'dense'; choose one of: half-overlap"):
        layout_tasks("dense", 64, 256, 64)


def test_recipe_strides_round_down_and_stay_positive():
    recipe = LayoutRecipe("x", Fraction(3, 4), "uniform")
    assert recipe.stride_cells(10) == 7 and recipe.stride_cells(1) == 1
    tasks = recipe.tasks(12, 40, (8, 10))
    assert sorted({t.view.left for t in tasks}) == [0, 7, 14, 21, 28, 30]
    assert sorted({t.view.top for t in tasks}) == [0, 4]
    message = "layout 'shifted' has no stride: it shifts non-overlapping tiles; layouts with a stride: half-overlap, "
    with pytest.raises(InvalidInputError, match=message):
        LAYOUTS["shifted"].stride_cells(64)


def test_edge_pairs():
    views = [View(0, left, 4, 16) for left in (0, 4, 8)]
    assert edge_pairs(views, 24) == (3, 7, 15, 19)
    assert edge_pairs([View(0, 20, 4, 8)], 24) == (3, 19)  # wraps: starts at column 20, ends at column 3
    assert edge_pairs([View(0, 0, 4, 24)], 24) == ()
