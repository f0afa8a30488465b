"""DemoFusion's skip residual as a post-step hook: the blend of Eq. 6, off at weight 0 and after the last step."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.dilated import cosine_factor
from multidiffusion.core.features.skip_residual import SkipResidual


@pytest.fixture
def scheduler() -> DDIMScheduler:
    s = DDIMScheduler(num_train_timesteps=1000)
    s.set_timesteps(10)
    return s


def test_blend_is_eq_6(scheduler: DDIMScheduler) -> None:
    z, noise, x = torch.randn(1, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    hook = SkipResidual(z, noise, 0.8, 3.0, 1000)
    t = scheduler.timesteps[3]
    c1 = 0.8 * cosine_factor(t, 1000) ** 3
    target = scheduler.add_noise(z.expand(2, -1, -1, -1), noise, t.expand(2))
    torch.testing.assert_close(hook(x, 2, scheduler), c1 * target + (1 - c1) * x)
    assert hook.share(t) == pytest.approx(c1)


def test_weight_zero_and_the_last_step_change_nothing(scheduler: DDIMScheduler) -> None:
    x = torch.randn(1, 3, 8, 8)
    assert SkipResidual(torch.zeros(1, 3, 8, 8), torch.randn(1, 3, 8, 8), 0.0, 3.0, 1000)(x, 0, scheduler) is x
    assert SkipResidual(torch.zeros(1, 3, 8, 8), torch.randn(1, 3, 8, 8), 1.0, 3.0, 1000)(x, 9, scheduler) is x


def test_bad_weight_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="skip residual"):
        SkipResidual(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), 1.5, 3.0, 1000)
