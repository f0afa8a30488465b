"""The sampling loop reuses its batch-sized buffers (issue 30 item 4): same numbers, far fewer fresh pages.

Each step crops a batch of views and weights the denoiser's output as large as the step before; the fusion plan keeps
those buffers for its run, and the Gaussian field keeps its matmul scratch, so only the crops and the model output
are new memory every step. The results must stay bit-identical to the allocating code (tests/regression checks the
whole pipeline); here the pieces are checked against their plain versions.
"""

from __future__ import annotations

import itertools
import sys

import pytest
import torch

from multidiffusion.core import (
    ClassifierFreeGuidance,
    FusionPlan,
    GuidedCondition,
    View,
    ViewTask,
    crop,
    paste_add,
    view_indices,
)
from multidiffusion.core.engine.crop import paste_add_weighted
from multidiffusion.core.engine.sampling import sample
from multidiffusion.core.engine.views import layout_views
from multidiffusion.core.engine.weights import view_weights

pytestmark = [pytest.mark.usefixtures("one_thread")]


def _layout(height: int, width: int, window: int, stride: int, circular: bool) -> list[View]:
    return layout_views(height, width, window, stride, circular=circular)


@pytest.mark.parametrize(("n", "channels", "circular"), [(1, 3, False), (2, 4, True), (3, 1, True)])
def test_crop_into_scratch_is_bit_identical_and_new(n: int, channels: int, circular: bool) -> None:
    views = _layout(12, 20, 6, 3, circular)
    index = view_indices(views, 12, 20)
    canvas = torch.randn(n, channels, 12, 20, generator=torch.Generator().manual_seed(0))
    scratch = torch.full((n * channels * index.numel(),), float("nan"))
    plain = crop(canvas, index, (6, 6))
    buffered = crop(canvas, index, (6, 6), scratch)
    assert torch.equal(buffered, plain)
    assert buffered.is_contiguous()
    assert buffered.untyped_storage().data_ptr() != scratch.untyped_storage().data_ptr()  # callers may keep it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_weighted_paste_is_bit_identical_to_multiply_then_paste(dtype: torch.dtype) -> None:
    views = _layout(10, 16, 4, 2, True)
    index = view_indices(views, 10, 16)
    n, c, v = 2, 3, len(views)
    g = torch.Generator().manual_seed(1)
    values = torch.randn(v * n, c, 4, 4, generator=g).to(dtype)
    weights = torch.rand(v, 4, 4, generator=g)
    start = torch.randn(n, c, 10, 16, generator=g)
    expected = start.clone()
    weighted = values.reshape(v, n, c, 4, 4).to(torch.float32) * weights[:, None, None]
    paste_add(expected, weighted.reshape(values.shape), index)
    got = paste_add_weighted(start.clone(), values, weights, index, torch.empty(values.numel()))
    assert torch.equal(got, expected)


def test_fusion_plan_reuses_its_buffers_from_call_to_call() -> None:
    views = _layout(16, 32, 8, 4, True)
    tasks = [ViewTask(v, 0, torch.ones(8, 8)) for v in views]
    plan = FusionPlan(tasks, 16, 32, "cpu")
    g = torch.Generator().manual_seed(2)
    pointers = set()
    for _ in range(3):
        canvas = torch.randn(1, 4, 16, 32, generator=g)
        crops = plan.crop(canvas, slice(None))
        assert torch.equal(crops, crop(canvas, plan.index, plan.view_size))
        numerator = torch.zeros_like(canvas)
        plan.accumulate(numerator, crops, slice(None))
        pointers.add(tuple(b.data_ptr() for b in plan._buffers.values()))
        assert torch.allclose(plan.normalise(numerator), canvas, rtol=1e-6, atol=1e-6)  # consistent crops
    assert len(pointers) == 1, pointers  # the same buffer every call


def test_fusion_plan_still_differentiates() -> None:
    """Crops and weighted pastes of a tensor that requires grad take the recorded path (no ``out=`` buffers)."""
    views = _layout(8, 8, 4, 2, False)
    plan = FusionPlan([ViewTask(v, 0, torch.ones(4, 4)) for v in views], 8, 8, "cpu")
    canvas = torch.randn(1, 2, 8, 8, requires_grad=True)
    numerator = torch.zeros(1, 2, 8, 8)
    plan.accumulate(numerator, plan.crop(canvas, slice(None)) * 2.0, slice(None))
    plan.normalise(numerator).sum().backward()
    assert canvas.grad is not None and torch.allclose(canvas.grad, torch.full_like(canvas, 2.0))


class _ConstantScheduler:
    """DDIM-like enough for :func:`sample`: a fixed number of steps, x ← 0.9·x + 0.1·model output."""

    def __init__(self, steps: int) -> None:
        self.timesteps = torch.arange(steps, 0, -1) * 10

    def step(self, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> object:
        return type("Out", (), {"prev_sample": 0.9 * x + 0.1 * model_output})()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts page faults as Linux and glibc report them")
def test_a_step_faults_in_only_the_crops_and_the_model_output() -> None:
    """Minor page faults per step, counted by the kernel: one step of 841 views of 3 × 64 × 64 (a 40 MB batch, past
    glibc's 32 MB mmap ceiling, so every fresh batch-sized tensor is faulted in page by page). The crops and the
    denoiser's output are new each step (2 batches of pages, plus a few canvas-sized temporaries); the allocating
    code faulted in 3 batches here (measured 31 k faults a step against 21 k, 10 k pages a batch)."""
    import resource  # Unix only

    views = _layout(512, 512, 64, 16, False)
    weights = view_weights(views, 512, 512)
    tasks = [ViewTask(v, 0, w) for v, w in zip(views, weights, strict=True)]
    batch_pages = len(views) * 3 * 64 * 64 * 4 // resource.getpagesize()
    faults: list[int] = []

    def denoiser(x: torch.Tensor, t: torch.Tensor, conds: object, views: object = None) -> torch.Tensor:
        return x * 0.5  # a new batch-sized tensor, like every model's output

    def callback(state: object) -> None:
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    x_T = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sample(denoiser, _ConstantScheduler(6), x_T, tasks, [None], callback=callback)
    per_step = [b - a for a, b in itertools.pairwise(faults[1:])]  # the first steps allocate the buffers
    assert max(per_step) < 2.5 * batch_pages, (per_step, batch_pages)


def test_guidance_in_place_is_bit_identical_and_leaves_the_model_output_alone() -> None:
    """Classifier-free guidance combines its two gathered halves in place outside autograd: the same numbers as
    ε_u + g (ε_c − ε_u), and the inner denoiser's output (which it may keep) is not written to."""
    g = torch.Generator().manual_seed(4)
    kept: list[torch.Tensor] = []

    def inner(x: torch.Tensor, t: torch.Tensor, conds: object, views: object = None) -> torch.Tensor:
        out = x * torch.randn(x.shape, generator=g) + 0.25
        kept.append((out, out.clone()))
        return out

    conds = [GuidedCondition("a", "neg", 7.5), GuidedCondition("b"), GuidedCondition("c", "neg", 3.0)]
    x = torch.randn(3 * 2, 4, 5, 6, generator=g)
    guided = ClassifierFreeGuidance(inner)(x, torch.tensor(10), conds)
    out, copy = kept[0]
    assert torch.equal(out, copy)
    n = 2
    uncond = torch.cat([out[0:2], out[4:6], out[6:8]])
    cond = torch.cat([out[2:4], out[4:6], out[8:10]])
    scale = torch.tensor([7.5] * n + [1.0] * n + [3.0] * n).reshape(-1, 1, 1, 1)
    assert torch.equal(guided, uncond + scale * (cond - uncond))
