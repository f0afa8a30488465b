"""Conditional samplers for known regions (core.features.conditional): settings, scheduler checks, the resampling
kernel, and the loop's hook points on a fake denoiser. Figures against the exact conditional: tests/oracle."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from multidiffusion.core import InvalidInputError, sample
from multidiffusion.core.engine.tasks import panorama_tasks
from multidiffusion.core.features.conditional import (
    ConditionalSampler,
    ConditionedKnown,
    _level,
    check_resampling,
    known_hook,
)
from multidiffusion.core.features.known import KnownRegion


def test_defaults_and_records():
    assert ConditionalSampler() == ConditionalSampler("blend", 1, 1.0)
    assert ConditionalSampler("repaint").passes == 10  # RePaint's r
    assert ConditionalSampler("repaint", 4, 0.5).record() == {"conditional": "repaint", "passes": 4, "fraction": 0.5}
    assert ConditionalSampler("tweedie", iterations=3).record()["iterations"] == 3
    assert ConditionalSampler("repaint", span="last").record()["span"] == "last"


def test_the_fraction_takes_the_first_or_the_last_steps():
    first, last = ConditionalSampler("repaint", 2, 0.25), ConditionalSampler("repaint", 2, 0.25, "last")
    assert [i for i in range(10) if first.active(i, 10)] == [0, 1, 2]  # ceil(2.5)
    assert [i for i in range(10) if last.active(i, 10)] == [7, 8, 9]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "dps"}, "unknown conditional sampler 'dps'; choose one of: blend, repaint, ddnm, tweedie"),
        ({"name": "blend", "passes": 2}, "blend takes each step once"),
        ({"name": "repaint", "passes": 1}, "repaint needs passes ≥ 2"),
        ({"name": "tweedie", "passes": 2}, "tweedie projects x̂₀ once per step"),
        ({"name": "repaint", "passes": 0}, r"passes must be a whole number per step in 1…100, got 0"),
        ({"name": "repaint", "passes": 2.0}, "passes must be a whole number"),
        ({"name": "repaint", "fraction": 0.0}, r"fraction of the steps must be in \(0, 1\]"),
        ({"name": "repaint", "fraction": float("nan")}, "fraction"),
        ({"name": "tweedie", "iterations": 0}, r"iterations must be a whole number in 1…64"),
        ({"name": "repaint", "span": "middle"}, "unknown span 'middle' of the steps; choose one of: first, last"),
    ],
)
def test_bad_settings_are_refused_in_one_line(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        ConditionalSampler(**kwargs)


def _set(scheduler, steps=10):
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize(
    "cls",
    [
        DDIMScheduler,
        DDPMScheduler,
        EulerDiscreteScheduler,
        EulerAncestralDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
    ],
)
def test_single_step_schedulers_can_be_resampled(cls):
    check_resampling(_set(cls()))


@pytest.mark.parametrize(
    ("cls", "why"),
    [
        (DPMSolverMultistepScheduler, "keeps past model outputs"),
        (UniPCMultistepScheduler, "keeps past model outputs"),
        (PNDMScheduler, "keeps past model outputs"),
        (HeunDiscreteScheduler, "second-order step is two model calls"),
    ],
)
def test_schedulers_with_state_between_steps_are_refused(cls, why):
    with pytest.raises(InvalidInputError, match=f"resampling cannot run with {cls.__name__}: .*{why}"):
        check_resampling(_set(cls()))


def test_blend_is_the_plain_known_region():
    region = KnownRegion(torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))
    assert known_hook(region, None, DDIMScheduler()) is region
    assert known_hook(region, ConditionalSampler("blend"), DDIMScheduler()) is region
    with pytest.raises(InvalidInputError, match="resampling cannot run with DPMSolverMultistepScheduler"):
        known_hook(region, ConditionalSampler("repaint"), _set(DPMSolverMultistepScheduler()))


@pytest.mark.parametrize("cls", [DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler])
def test_jump_back_is_the_forward_kernel(cls):
    """x_{t−1} = a' x₀ + s' ε noised back to t must be a x₀ + s ε' in distribution: mean a x₀, variance s²
    (200,000 draws: standard error of the variance 0.3 %)."""
    scheduler = _set(cls())
    region = KnownRegion(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
    hook = ConditionedKnown(region, ConditionalSampler("repaint", 2))
    index = 4
    a, s = _level(scheduler, index)
    a_prev, s_prev = _level(scheduler, index + 1)
    x0 = 0.7
    gen = torch.Generator().manual_seed(0)
    x_prev = a_prev * x0 + s_prev * torch.randn(200_000, 1, 1, 1, generator=gen)
    x_t = hook.jump_back(x_prev, index, scheduler, gen)
    assert float(x_t.mean()) == pytest.approx(a * x0, abs=4 * s / 200_000**0.5)
    assert float(x_t.var()) == pytest.approx(s * s, rel=0.015)


def test_levels_after_the_last_step():
    ddim = _set(DDIMScheduler(set_alpha_to_one=True))
    assert _level(ddim, 10) == (1.0, 0.0)
    euler = _set(EulerDiscreteScheduler())
    assert _level(euler, 10) == (1.0, 0.0)
    flow = _set(FlowMatchEulerDiscreteScheduler())
    assert _level(flow, 10) == (1.0, 0.0)
    dpm = _set(DPMSolverMultistepScheduler(use_karras_sigmas=True))  # variance-preserving with a σ table
    a, s = _level(dpm, 3)
    assert a == pytest.approx(1 / (1 + float(dpm.sigmas[3]) ** 2) ** 0.5) and a * a + s * s == pytest.approx(1.0)


class _Counting:
    """A denoiser predicting ε = x / 2 (any linear map will do), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x, t, conds, views=None):
        self.calls += 1
        return 0.5 * x


def _run(sampler, steps=6, scheduler=None):
    scheduler = scheduler or _set(DDIMScheduler(), steps)
    denoiser = _Counting()
    x_T = torch.randn(1, 2, 8, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 16)
    mask[..., :6] = 1.0
    region = KnownRegion(torch.full((1, 2, 8, 16), 0.3), mask, x_T)
    hook = known_hook(region, sampler, scheduler)
    out = sample(
        denoiser, scheduler, x_T, panorama_tasks(8, 16, 8, 4), [None], post_step=[hook],
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    return out, denoiser.calls, region


def test_resampling_takes_each_step_U_times_within_the_fraction():
    _, base, _ = _run(None)
    assert base == 6  # one call per step (all three views in one batch)
    _, calls, _ = _run(ConditionalSampler("repaint", 3))
    assert calls == 3 * 6
    _, calls, _ = _run(ConditionalSampler("repaint", 3, 0.5))
    assert calls == 3 * 3 + 3
    _, calls, _ = _run(ConditionalSampler("ddnm", 2, 1 / 3))
    assert calls == 2 * 2 + 4
    _, calls, _ = _run(ConditionalSampler("repaint", 3, 0.5, "last"))
    assert calls == 3 + 3 * 3


def test_resampling_keeps_the_known_region_and_draws_from_the_generator():
    out, _, region = _run(ConditionalSampler("repaint", 3))
    blend, _, _ = _run(None)
    known = region.mask.expand_as(out) > 0
    assert torch.equal(out[known], torch.full_like(out[known], 0.3))
    assert not torch.equal(out, blend)


def test_resampling_a_stateful_single_step_scheduler_restores_its_step_index():
    """Euler counts its own steps: each repeat must start from the same index (else it runs off its sigmas)."""
    out, calls, _ = _run(ConditionalSampler("repaint", 2), scheduler=_set(EulerDiscreteScheduler(), 6))
    assert calls == 12 and bool(torch.isfinite(out).all())


def test_ddnm_with_a_hard_mask_and_ddim_is_the_blend():
    """A pixel mask's A†A is the mask: the projection moves only the known cells, which DDIM (η = 0) then keeps on
    x_T's own noise, the blend's rule (the module docstring): equal to float rounding."""
    blend, _, _ = _run(None)
    ddnm, calls, _ = _run(ConditionalSampler("ddnm"))
    assert calls == 6
    torch.testing.assert_close(ddnm, blend, rtol=0, atol=1e-5)


def test_tweedie_costs_one_pass_per_iteration_and_keeps_the_known_region():
    out, calls, region = _run(ConditionalSampler("tweedie", iterations=3))
    # Steps whose a² < 0.01 s² are not projected (early DDIM steps of 6: none of them here, ᾱ ≥ 0.047).
    assert 6 < calls <= 6 * 4
    known = region.mask.expand_as(out) > 0
    assert torch.equal(out[known], torch.full_like(out[known], 0.3))
