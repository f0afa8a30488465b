"""Dilated views (DemoFusion's dilated sampling): their cells, their share of every cell, the pre-filter's wrapper."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from multidiffusion.core import panorama_tasks
from multidiffusion.core.engine.fusion import FusionPlan
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.dilated import (
    DilatedView,
    GaussianPrefilter,
    cosine_factor,
    dilated_schedule,
    dilated_tasks,
    dilation_factor,
    gaussian_blur,
)


def crops(height: int = 32, width: int = 48, window: int = 16, stride: int = 8):
    return panorama_tasks(height, width, window, stride)


def test_dilation_factor_is_the_largest_that_divides_and_leaves_a_window() -> None:
    assert dilation_factor(64, 64, (16, 16), 4) == 4
    assert dilation_factor(64, 64, (16, 16), 8) == 4  # 64 / 8 = 8 cells: smaller than the window
    assert dilation_factor(48, 64, (16, 16), 4) == 2  # 48 / 4 = 12 cells: smaller than the window
    assert dilation_factor(30, 30, (16, 16), 2) == 1


@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_dilated_views_take_exactly_their_share_of_every_cell(share: float) -> None:
    base = crops()
    cover = FusionPlan(base, 32, 48, "cpu").denominator[0, 0]
    dilated = dilated_tasks(32, 48, (16, 16), (8, 8), 2, cover, share)
    assert len(dilated) == 4 * 2  # k² sub-latents of 16 × 24 cells, two 16-px windows each
    total = FusionPlan([*base, *dilated], 32, 48, "cpu").denominator[0, 0]
    torch.testing.assert_close(1 - cover / total, torch.full_like(cover, share), rtol=1e-6, atol=1e-6)


def test_dilated_view_samples_the_cells_of_its_index_map() -> None:
    canvas = torch.randn(2, 3, 32, 48)
    cover = torch.ones(32, 48)
    for task in dilated_tasks(32, 48, (16, 16), (8, 8), 2, cover, 0.5):
        assert isinstance(task.view, DilatedView) and (task.view.top, task.view.left) == (0, 0)
        gathered = canvas.flatten(2)[:, :, task.index].reshape(2, 3, 16, 16)
        assert torch.equal(task.view.sample(canvas), gathered)


def test_dilated_tasks_refuse_a_factor_that_does_not_divide() -> None:
    with pytest.raises(InvalidInputError, match="dilated views need"):
        dilated_tasks(30, 48, (15, 16), (8, 8), 4, torch.ones(30, 48), 0.5)


def test_schedule_share_follows_the_cosine_and_drops_the_views_at_the_end() -> None:
    base = crops()
    timesteps = torch.tensor([999, 750, 500, 250, 1])
    schedule = dilated_schedule(base, 32, 48, (16, 16), (8, 8), 2, timesteps, 1000, 0.5, 1.0)
    counts = [len(schedule.tasks_at(i)) for i in range(5)]
    assert counts[0] == len(base) + 8 and counts[-1] == len(base)  # c₂ ≈ 0 at t = 1: the crops alone
    assert cosine_factor(1000, 1000) == 1.0 and cosine_factor(0, 1000) == pytest.approx(0.0)


def test_gaussian_blur_keeps_constants_and_sigma_zero_is_the_identity() -> None:
    x = torch.full((1, 2, 10, 12), 0.7)
    torch.testing.assert_close(gaussian_blur(x, 1.5), x)
    y = torch.randn(1, 2, 10, 12)
    assert gaussian_blur(y, 0.0) is y
    assert float(gaussian_blur(y, 1.0).var()) < float(y.var())


def test_prefilter_changes_no_crop_and_only_the_dilated_rows_the_model_sees() -> None:
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[0]
    canvas = torch.randn(1, 3, 32, 32)
    hook = GaussianPrefilter(1.0, 1.0, 1000)
    hook.begin_step(canvas, 0, t, scheduler)
    assert hook(canvas, None) is canvas  # type: ignore[arg-type]
    seen: list[torch.Tensor] = []

    def denoiser(x, t, conds, views=None):
        seen.append(x)
        return x

    wrapped = hook.wrap(denoiser)
    dilated = DilatedView(0, 0, 16, 16, row=1, col=0, factor=2)
    crop = View(0, 0, 16, 16)
    rows = torch.cat([canvas[:, :, :16, :16], dilated.sample(canvas)])
    wrapped(rows, t, [None, None], views=[crop, dilated])
    assert torch.equal(seen[0][:1], canvas[:, :, :16, :16])
    sigma = 1.0 * cosine_factor(t, 1000)
    torch.testing.assert_close(seen[0][1:], dilated.sample(gaussian_blur(canvas, sigma)))
