"""The sampling loop of docs/design.md §3 with fake denoisers and schedulers (§9 core tier)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from multidiffusion.core import (
    ClassifierFreeGuidance,
    GuidedCondition,
    HookContext,
    InvalidInputError,
    StepState,
    View,
    ViewTask,
    panorama_tasks,
    rescale_guidance,
    sample,
)
from multidiffusion.core.types import SamplerState
from tests.helpers.numerics import assert_close_scaled

# Tolerances relative to max|expected| (tests/helpers/numerics.py). Whole sampling loops: |x| ≈ 2–21 over 5–10 steps,
# each fusing ≤ 8 weighted views per cell (float32, eps 1.2e-7). Worst relative error measured: 4.4e-7 here on AVX2 and
# AVX-512 kernels, 6.4e-7 for the DDIM test on an Intel CPU whose MKL takes its AVX-512 path (issue 11).
REL_LOOP = 1e-5
# One step, one guidance formula or one std in closed form: worst measured 1.4e-7 (one hooked step).
REL_ONE_STEP = 2e-6

N, C, H, W = 2, 3, 13, 22  # two canvases; 13 × 22 latent cells: neither size is window + k·stride
WINDOW, STRIDE = 8, 4


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.float_sensitive]


class FakeScheduler:
    """Diffusers-style scheduler whose step is x − 0.1·o."""

    init_noise_sigma = 1.0

    def __init__(self, timesteps: Sequence[int] = (900, 700, 500, 300, 100)) -> None:
        self.timesteps = torch.tensor(list(timesteps))

    def scale_model_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    def step(self, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(prev_sample=x - 0.1 * model_output)


def per_row(conds: Sequence[Any], rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Each condition holds N entries (one per canvas): the (len(conds)·N,) column of their values."""
    n = rows // len(conds)
    out = torch.cat([torch.as_tensor(c, dtype=dtype).reshape(-1).expand(n) for c in conds])
    assert out.shape == (rows,)
    return out


class FakeDenoiser:
    """Pure torch, row-independent, non-linear: 0.1·x + tanh(3×3 mean of x) + (1 + t/1000)·condition."""

    def __init__(self, circular: bool = False) -> None:
        self.circular = circular
        self.calls: list[tuple[torch.Tensor, torch.Tensor, list[Any]]] = []

    def local_mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.circular:  # translation equivariant on the torus
            shifted = [torch.roll(x, (di, dj), dims=(2, 3)) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
            return torch.stack(shifted).mean(0)
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, conds: Sequence[Any], views: Any = None) -> torch.Tensor:
        self.calls.append((x.clone(), t, list(conds)))
        const = per_row(conds, x.shape[0], x.dtype)[:, None, None, None]
        return 0.1 * x + torch.tanh(self.local_mean(x)) + (1 + float(t) / 1000) * const


def make_tasks(weights: str = "feathered") -> list[ViewTask]:
    """A panorama layout for condition 0 plus region-like tasks for condition 1 on every other view."""
    tasks = panorama_tasks(H, W, WINDOW, STRIDE, weights=weights)
    g = torch.Generator().manual_seed(7)
    region = [ViewTask(t.view, 1, torch.rand(WINDOW, WINDOW, generator=g)) for t in tasks[::2]]
    return tasks + region


CONDITIONS = [torch.tensor([0.3, -0.2]), torch.tensor([-0.5, 0.8])]


def noise(seed: int = 0, shape: tuple[int, ...] = (N, C, H, W)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def naive_crop(canvas: torch.Tensor, v: View) -> torch.Tensor:
    return torch.roll(canvas, shifts=-v.left, dims=3)[:, :, v.top : v.top + v.height, : v.width]


def naive_fuse(per_task: list[torch.Tensor], tasks: Sequence[ViewTask], shape: torch.Size) -> torch.Tensor:
    """Eq. 5 by a loop over views, float64."""
    n, c, height, width = shape
    value = torch.zeros(n, c, height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    for o, task in zip(per_task, tasks, strict=True):
        v = task.view
        rows = torch.arange(v.top, v.top + v.height)[:, None]
        cols = ((v.left + torch.arange(v.width)) % width)[None, :]
        value[:, :, rows, cols] += task.weight.double() * o.double()
        count[rows, cols] += task.weight.double()
    return value / count


def naive_sample(denoiser, scheduler, x_T, tasks, conditions, hook=None) -> torch.Tensor:
    """docs/design.md §3 written as loops: one view at a time, fuse outputs (and hooked crops), step once."""
    x = x_T.clone()
    for t in scheduler.timesteps:
        crops = [naive_crop(x, task.view) for task in tasks]
        if hook is not None:
            crops = [hook(c) for c in crops]
        outs = [
            denoiser(scheduler.scale_model_input(c, t), t, [conditions[task.condition]])
            for c, task in zip(crops, tasks, strict=True)
        ]
        fused_out = naive_fuse(outs, tasks, x.shape).float()
        fused_x = x if hook is None else naive_fuse(crops, tasks, x.shape).float()
        x = scheduler.step(fused_out, t, fused_x).prev_sample
    return x


def test_matches_naive_loop() -> None:
    tasks = make_tasks()
    x_T = noise()
    got = sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS)
    expected = naive_sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS)
    assert got.shape == x_T.shape and got.dtype == torch.float32
    assert_close_scaled(got, expected, rel=REL_LOOP, what="sample() vs the naive loop")
    assert not torch.allclose(got, x_T)


@pytest.mark.parametrize("weights", ["uniform", "feathered", "gaussian"])
def test_view_batch_size_does_not_change_result(weights: str) -> None:
    tasks = make_tasks(weights)
    x_T = noise(1)
    results = [
        sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS, view_batch_size=b) for b in (1, 2, 3, None)
    ]
    for r in results[1:]:
        assert_close_scaled(r, results[0], rel=REL_LOOP, what="view_batch_size b vs 1")


def test_reruns_are_bit_identical() -> None:
    tasks = make_tasks()
    x_T = noise(2)
    a = sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS, view_batch_size=3)
    b = sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS, view_batch_size=3)
    assert torch.equal(a, b)


def test_sample_does_not_modify_input() -> None:
    x_T = noise(3)
    before = x_T.clone()
    sample(FakeDenoiser(), FakeScheduler(), x_T, make_tasks(), CONDITIONS)
    assert torch.equal(x_T, before)


@pytest.mark.parametrize("timesteps", [(500,), (900, 700, 500, 300, 100)])
def test_identity_hook_changes_nothing(timesteps: tuple[int, ...]) -> None:
    tasks = make_tasks()
    x_T = noise(4)
    plain = sample(FakeDenoiser(), FakeScheduler(timesteps), x_T, tasks, CONDITIONS, view_batch_size=2)
    hooked = sample(
        FakeDenoiser(), FakeScheduler(timesteps), x_T, tasks, CONDITIONS, view_batch_size=2, hooks=[lambda x, ctx: x]
    )
    # X = Σ W·x / Σ W equals x up to float32 rounding (a few ulps of |x| ≈ 2, compounded over the steps).
    assert_close_scaled(hooked, plain, rel=REL_LOOP, what="identity hook vs none")


def test_hook_crops_are_fused_into_x() -> None:
    tasks = make_tasks()
    x_T = noise(5)

    def add(x: torch.Tensor, context: HookContext | None = None) -> torch.Tensor:
        return x + 0.25

    plain = sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS)
    hooked = sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS, hooks=[add], view_batch_size=3)
    assert (hooked - plain).abs().max() > 0.1
    expected = naive_sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS, hook=add)
    assert_close_scaled(hooked, expected, rel=REL_LOOP, what="hooked sample() vs the naive loop")
    # One step in closed form: x_{t−1} = X − 0.1·O with X = x_T + 0.25 (the hooked crops, fused), not x_T.
    one = FakeScheduler([500])
    got = sample(FakeDenoiser(), one, x_T, tasks, CONDITIONS, hooks=[add])
    den = FakeDenoiser()
    outs = [den(naive_crop(x_T, task.view) + 0.25, one.timesteps[0], [CONDITIONS[task.condition]]) for task in tasks]
    expected_one = (x_T + 0.25) - 0.1 * naive_fuse(outs, tasks, x_T.shape).float()
    assert_close_scaled(got, expected_one, rel=REL_ONE_STEP, what="one hooked step vs its closed form")


def test_hook_context() -> None:
    tasks = make_tasks()
    seen: list[HookContext] = []

    def record(x: torch.Tensor, context: HookContext) -> torch.Tensor:
        assert x.shape == (len(context.tasks) * N, C, WINDOW, WINDOW)
        seen.append(context)
        return x

    scheduler = FakeScheduler([900, 500])
    sample(FakeDenoiser(), scheduler, noise(), tasks, CONDITIONS, hooks=[record, record], view_batch_size=4)
    per_step = -(-len(tasks) // 4)
    assert len(seen) == 2 * 2 * per_step  # two hooks, two steps
    for k, ctx in enumerate(seen[::2]):
        step, batch = divmod(k, per_step)
        assert ctx.step_index == step
        assert int(ctx.timestep) == int(scheduler.timesteps[step])
        assert list(ctx.task_indices) == list(range(4 * batch, min(4 * batch + 4, len(tasks))))
        assert list(ctx.tasks) == [tasks[i] for i in ctx.task_indices]
        assert ctx.num_canvases == N
        assert ctx.scheduler is scheduler


def test_callback_and_early_stop() -> None:
    tasks = make_tasks()
    x_T = noise(6)
    states: list[StepState] = []
    scheduler = FakeScheduler()
    full = sample(FakeDenoiser(), scheduler, x_T, tasks, CONDITIONS, callback=states.append)
    assert [s.step_index for s in states] == list(range(len(scheduler.timesteps)))
    assert all(s.num_steps == len(scheduler.timesteps) for s in states)
    assert [int(s.timestep) for s in states] == scheduler.timesteps.tolist()
    assert torch.equal(states[-1].latents, full)

    calls: list[int] = []

    def stop_at_1(state: StepState) -> bool:
        calls.append(state.step_index)
        return state.step_index == 1

    stopped = sample(FakeDenoiser(), FakeScheduler(), x_T, tasks, CONDITIONS, callback=stop_at_1)
    assert calls == [0, 1]
    two = sample(FakeDenoiser(), FakeScheduler(scheduler.timesteps[:2].tolist()), x_T, tasks, CONDITIONS)
    assert torch.equal(stopped, two)
    assert torch.equal(stopped, states[1].latents)


@pytest.mark.parametrize("batch", [1, 2, 5, None])
def test_denoiser_receives_conditions_in_order(batch: int | None) -> None:
    tasks = make_tasks()
    x_T = noise(7)
    den = FakeDenoiser()
    scheduler = FakeScheduler([900, 500])
    sample(den, scheduler, x_T, tasks, CONDITIONS, view_batch_size=batch)
    size = len(tasks) if batch is None else batch
    groups = [list(range(i, min(i + size, len(tasks)))) for i in range(0, len(tasks), size)]
    assert len(den.calls) == 2 * len(groups)
    for k, (x, t, conds) in enumerate(den.calls):
        step, g = divmod(k, len(groups))
        ids = groups[g]
        assert int(t) == int(scheduler.timesteps[step])
        assert x.shape == (len(conds) * N, C, WINDOW, WINDOW)
        assert len(conds) == len(ids)
        assert all(c is CONDITIONS[tasks[i].condition] for c, i in zip(conds, ids, strict=True))
        if step == 0:  # rows i·N … i·N + N − 1 are the N canvases' crops of task i
            for j, i in enumerate(ids):
                assert torch.equal(x[j * N : (j + 1) * N], naive_crop(x_T, tasks[i].view))


def test_invalid_arguments() -> None:
    tasks = make_tasks()
    with pytest.raises(InvalidInputError):
        sample(FakeDenoiser(), FakeScheduler(), noise(), tasks, CONDITIONS, view_batch_size=0)
    with pytest.raises(InvalidInputError, match="task condition 1 out of range for 1 conditions; a task's condition"):
        sample(FakeDenoiser(), FakeScheduler(), noise(), tasks, CONDITIONS[:1])  # condition 1 out of range
    with pytest.raises(InvalidInputError):  # the layout does not cover a wider canvas
        sample(FakeDenoiser(), FakeScheduler(), noise(shape=(N, C, H, W + 3)), tasks, CONDITIONS)
    with pytest.raises(InvalidInputError, match=r"x_T must be \(N, C, H, W\), got shape \(3, 13, 22\)"):
        sample(FakeDenoiser(), FakeScheduler(), noise(shape=(C, H, W)), tasks, CONDITIONS)


@pytest.mark.parametrize(
    ("step", "shape", "message"),
    [
        (7, (N, C, H, W), "cannot start at step 7 of 5 from a canvas"),
        (2, (N, C, H, W + 1), r"a start needs a step in 0…5 and a canvas of x_T's shape"),
    ],
)
def test_a_start_that_does_not_fit_is_refused(step: int, shape: tuple[int, ...], message: str) -> None:
    start = SamplerState(step, noise(shape=shape))
    with pytest.raises(InvalidInputError, match=message):
        sample(FakeDenoiser(), FakeScheduler(), noise(), make_tasks(), CONDITIONS, start=start)


# --- classifier-free guidance -------------------------------------------------------------------


class CondDenoiser:
    """Output depends non-linearly on the condition (one value per canvas); records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, list[Any]]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, conds: Sequence[Any], views: Any = None) -> torch.Tensor:
        self.calls.append((x.clone(), list(conds)))
        c = per_row(conds, x.shape[0], x.dtype)[:, None, None, None]
        return x * (1 + c) + c**2 + torch.sin(3 * x)


def cond(value: float) -> torch.Tensor:
    return torch.full((N,), value)


def test_cfg_scale_one_skips_negative() -> None:
    inner = CondDenoiser()
    pos, neg = cond(0.4), cond(-0.3)
    x = noise(8, (N, C, 5, 5))
    out = ClassifierFreeGuidance(inner)(x, torch.tensor(10), [GuidedCondition(pos, neg, guidance_scale=1.0)])
    assert len(inner.calls) == 1
    called_x, called_conds = inner.calls[0]
    assert called_x.shape[0] == N and called_conds == [pos]
    torch.testing.assert_close(out, CondDenoiser()(x, torch.tensor(10), [pos]), rtol=0, atol=0)
    # No negative at all: also a single pass.
    inner2 = CondDenoiser()
    ClassifierFreeGuidance(inner2)(x, torch.tensor(10), [GuidedCondition(pos, None, guidance_scale=7.5)])
    assert inner2.calls[0][0].shape[0] == N and inner2.calls[0][1] == [pos]


@pytest.mark.parametrize("scale", [0.0, 2.0, 7.5])
def test_cfg_formula_and_batching(scale: float) -> None:
    inner = CondDenoiser()
    t = torch.tensor(10)
    x = noise(9, (3 * N, C, 5, 5))
    conds = [
        GuidedCondition(cond(0.4), cond(-0.3), guidance_scale=scale),
        GuidedCondition(cond(0.9), None),
        GuidedCondition(cond(-0.6), cond(0.2), guidance_scale=scale),
    ]
    out = ClassifierFreeGuidance(inner)(x, t, conds)
    # One inner call, both halves of each guided condition in the same batch: [neg, pos], then [pos], ...
    assert len(inner.calls) == 1
    called_x, called_conds = inner.calls[0]
    guided = conds[0].guided
    if guided:
        expected_conds = [conds[0].negative, conds[0].positive, conds[1].positive]
        expected_conds += [conds[2].negative, conds[2].positive]
    else:
        expected_conds = [c.positive for c in conds]
    assert called_conds == expected_conds
    assert called_x.shape[0] == len(expected_conds) * N
    ref = CondDenoiser()
    for i, c in enumerate(conds):
        xi = x[i * N : (i + 1) * N]
        cond_out = ref(xi, t, [c.positive])
        if c.guided:
            uncond_out = ref(xi, t, [c.negative])
            expected = uncond_out + scale * (cond_out - uncond_out)
        else:
            expected = cond_out
        assert_close_scaled(out[i * N : (i + 1) * N], expected, rel=REL_ONE_STEP, what=f"CFG rows of condition {i}")


def diffusers_rescale_noise_cfg(noise_cfg: torch.Tensor, noise_pred_text: torch.Tensor, phi: float) -> torch.Tensor:
    """diffusers' ``rescale_noise_cfg`` (Lin et al. 2023, §3.4), written out by hand."""
    std_text = noise_pred_text.std(dim=list(range(1, noise_pred_text.ndim)), keepdim=True)
    std_cfg = noise_cfg.std(dim=list(range(1, noise_cfg.ndim)), keepdim=True)
    rescaled = noise_cfg * (std_text / std_cfg)
    return phi * rescaled + (1 - phi) * noise_cfg


@pytest.mark.parametrize("phi", [0.3, 0.7, 1.0])
def test_cfg_guidance_rescale(phi: float) -> None:
    t = torch.tensor(10)
    x = noise(10, (N, C, 6, 6))
    pos, neg = cond(0.4), cond(-0.3)
    out = ClassifierFreeGuidance(CondDenoiser())(x, t, [GuidedCondition(pos, neg, 7.5, guidance_rescale=phi)])
    ref = CondDenoiser()
    c_out, u_out = ref(x, t, [pos]), ref(x, t, [neg])
    cfg = u_out + 7.5 * (c_out - u_out)
    expected = diffusers_rescale_noise_cfg(cfg, c_out, phi)
    assert_close_scaled(out, expected, rel=REL_ONE_STEP, what="rescaled CFG vs diffusers' formula")
    assert_close_scaled(rescale_guidance(cfg, c_out, phi), expected, rel=REL_ONE_STEP, what="rescale_guidance")
    if phi == 1.0:  # per-sample std equals the conditional output's
        assert_close_scaled(out.std(dim=(1, 2, 3)), c_out.std(dim=(1, 2, 3)), rel=REL_ONE_STEP, what="per-sample std")


def test_cfg_inside_sample_is_batch_invariant() -> None:
    tasks = make_tasks()
    x_T = noise(11)
    conditions = [
        GuidedCondition(cond(0.4), cond(-0.3), guidance_scale=3.0, guidance_rescale=0.5),
        GuidedCondition(cond(-0.2), cond(0.1), guidance_scale=1.0),
    ]
    results = [
        sample(ClassifierFreeGuidance(CondDenoiser()), FakeScheduler(), x_T, tasks, conditions, view_batch_size=b)
        for b in (1, 3, None)
    ]
    for r in results[1:]:
        assert_close_scaled(r, results[0], rel=REL_LOOP, what="CFG view_batch_size b vs 1")
    assert bool(torch.isfinite(results[0]).all())


# --- §2: fuse-then-step equals step-then-average for a linear scheduler ---------------------------


def ddim() -> Any:
    from tests.helpers.tiny_models import sd_ddim_scheduler  # only this test needs diffusers

    scheduler = sd_ddim_scheduler()
    scheduler.set_timesteps(10)
    return scheduler


@pytest.mark.parametrize("weights", ["uniform", "feathered"])
def test_ddim_fuse_then_step_equals_step_then_average(weights: str) -> None:
    tasks = make_tasks(weights)
    scheduler = ddim()
    x_T = noise(12) * scheduler.init_noise_sigma
    ours = sample(FakeDenoiser(), scheduler, x_T, tasks, CONDITIONS, view_batch_size=4)

    # The official code / diffusers' panorama pipeline: step every view, then average with the weights.
    den, ref_scheduler = FakeDenoiser(), ddim()
    x = x_T.clone()
    for t in ref_scheduler.timesteps:
        stepped = []
        for task in tasks:
            view_x = naive_crop(x, task.view)
            o = den(ref_scheduler.scale_model_input(view_x, t), t, [CONDITIONS[task.condition]])
            stepped.append(ref_scheduler.step(o, t, view_x, eta=0.0).prev_sample)
        x = naive_fuse(stepped, tasks, x.shape).float()
    assert ours.abs().max() > 1.0  # not a trivial comparison of near-zero tensors
    assert_close_scaled(ours, x, rel=REL_LOOP, what="fuse-then-step vs step-then-average")


# --- wrap-around equivariance ---------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["uniform", "feathered"])
@pytest.mark.parametrize("shift", [STRIDE, 3 * STRIDE])
def test_circular_roll_equivariance(weights: str, shift: int) -> None:
    height, width = 8, 24  # width divisible by the stride: views at 0, 4, …, 20, several wrap around
    tasks = panorama_tasks(height, width, WINDOW, STRIDE, weights=weights, circular=True)
    assert any(t.view.left + t.view.width > width for t in tasks)
    x_T = noise(13, (N, C, height, width))
    conditions = [torch.tensor([0.3, -0.2])]
    out = sample(FakeDenoiser(circular=True), FakeScheduler(), x_T, tasks, conditions, view_batch_size=4)
    rolled = sample(
        FakeDenoiser(circular=True),
        FakeScheduler(),
        torch.roll(x_T, shift, dims=3),
        tasks,
        conditions,
        view_batch_size=4,
    )
    assert_close_scaled(rolled, torch.roll(out, shift, dims=3), rel=REL_LOOP, what="rolled input vs rolled output")
    assert not torch.allclose(out, torch.roll(out, shift, dims=3), atol=1e-3)  # the result is not trivially periodic
