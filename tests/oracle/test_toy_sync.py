"""SyncDiffusion on the toy model: the analytic posterior gradient, the light graph, batching, the step schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from multidiffusion.adapters.families.toy import load
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, panorama_tasks
from multidiffusion.core.features.sync import SyncDiffusion, SyncSettings
from multidiffusion.core.metrics.statistics_loss import statistics_distance
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.types import HookContext
from tests.helpers.numerics import assert_close_scaled

# Relative to max|expected| (tests/helpers/numerics.py). float64, eigenbasis vs a dense solve of 35 unknowns: the
# posterior
# matches to ~1e-13 (tests/core/oracle/test_field.py); its gradients, a few more products: measured ≤ 6e-12.
REL_F64 = 1e-10
# float32 analytic gradient vs the float64 one (two eigenbasis transforms, eps 1.2e-7): measured 1.5e-7.
REL_F32 = 1e-5
# The SyncDiffusion update in float32 through two batchings of the same views (per-view sums, reordered
# kernels): measured 0 on one CPU.
REL_BATCHING = 1e-5
# The loss as shifted differences vs a 3×3 convolution bank (float32, sums over 384 pixels): measured 1.3e-7.
REL_LOSS = 1e-5


def _mixture_problem(dtype=torch.float64):
    """Rows at five noise levels, each x_t drawn from one of two colours: responsibilities from 0.5 to ~1."""
    g = torch.Generator().manual_seed(5)
    field = GaussianField(length_scale=1.7, sigma=0.4)
    abar = torch.tensor([0.003, 0.2, 0.5, 0.93, 0.9991], dtype=torch.float64)
    alpha, s = abar.sqrt(), (1 - abar).sqrt()
    means = torch.rand(5, 2, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8
    x0 = field.sample(5, 5, 7, means[:, 1], generator=g).double()
    noise = torch.randn(5, 3, 5, 7, generator=g, dtype=torch.float64)
    x_t = alpha.reshape(-1, 1, 1, 1) * x0 + s.reshape(-1, 1, 1, 1) * noise
    return field, x_t.to(dtype), means, alpha, s


def dense_mixture(field, x_t, means, alpha, s, prediction_type):
    """E[target | x_t] for the K-field mixture by dense (hw × hw) algebra, differentiable by autograd."""
    b, c, h, w = x_t.shape
    cov = field.covariance(h, w)
    eye = torch.eye(h * w, dtype=torch.float64)
    rows = []
    for i in range(b):
        a, sd = float(alpha[i]), float(s[i])
        var_inv = torch.linalg.inv(a * a * cov + sd * sd * eye)
        outs, logs = [], []
        for mu in means[i]:
            resid = x_t[i].reshape(c, h * w) - a * mu[:, None]  # (C, hw)
            solved = resid @ var_inv  # Var(x_t)⁻¹ symmetric
            x0 = mu[:, None] + a * solved @ cov
            eps = sd * solved
            out = {"sample": x0, "epsilon": eps, "v_prediction": a * eps - sd * x0}[prediction_type]
            outs.append(out.reshape(c, h, w))
            logs.append(-0.5 * (resid * solved).sum())
        r = torch.softmax(torch.stack(logs), 0)
        rows.append(sum(rk * o for rk, o in zip(r, outs, strict=True)))
    return torch.stack(rows)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_analytic_gradient_equals_autograd_through_the_dense_posterior(prediction_type):
    field, x_t, means, alpha, s = _mixture_problem()
    g = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x_t.clone().requires_grad_(True)
    ours = field.predict_mixture(x, means, alpha, s, prediction_type)
    (grad,) = torch.autograd.grad((ours * g).sum(), x)
    x_ref = x_t.clone().requires_grad_(True)
    ref = dense_mixture(field, x_ref, means, alpha, s, prediction_type)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), x_ref)
    assert_close_scaled(ours, ref, rel=REL_F64, what=f"{prediction_type} mixture posterior vs dense")
    assert_close_scaled(grad, grad_ref, rel=REL_F64, what=f"{prediction_type} mixture gradient vs dense autograd")
    with torch.no_grad():  # the inference path computes the same posterior
        assert_close_scaled(field.predict_mixture(x_t, means, alpha, s, prediction_type), ref, rel=REL_F64, what="")
    # The single field (one colour): the gradient is the symmetric linear operator alone.
    one = means[:, :1].expand(-1, 2, -1)
    x1 = x_t.clone().requires_grad_(True)
    (grad1,) = torch.autograd.grad((field.predict(x1, one[:, 0], alpha, s, prediction_type) * g).sum(), x1)
    x1_ref = x_t.clone().requires_grad_(True)
    (grad1_ref,) = torch.autograd.grad((dense_mixture(field, x1_ref, one, alpha, s, prediction_type) * g).sum(), x1_ref)
    assert_close_scaled(grad1, grad1_ref, rel=REL_F64, what=f"{prediction_type} single-field gradient vs dense")


def test_analytic_gradient_passes_gradcheck():
    field, x_t, means, alpha, s = _mixture_problem()
    x = x_t[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: field.predict_mixture(v, means[:3], alpha[:3], s[:3], "epsilon"), (x,))


@pytest.mark.float_sensitive
def test_float32_analytic_gradient_matches_float64():
    field, x_t, means, alpha, s = _mixture_problem()
    g = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for dtype in (torch.float32, torch.float64):
        x = x_t.to(dtype).requires_grad_(True)
        out = field.predict_mixture(x, means.to(dtype), alpha, s, "epsilon")
        grads.append(torch.autograd.grad((out * g.to(dtype)).sum(), x)[0])
    assert grads[0].dtype == torch.float32
    assert_close_scaled(grads[0], grads[1], rel=REL_F32, what="float32 vs float64 analytic gradient")


def test_the_gradient_path_saves_no_image_sized_tensor():
    """The toy denoiser's backward keeps O(B·K) numbers, not the eigen-coordinates of every view."""
    model = load("toy", device=torch.device("cpu"))
    x = torch.randn(16, 3, 32, 32).requires_grad_(True)
    means = model.encode_prompts(["red or blue"]).expand(16, -1, -1)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.differentiable.denoiser(x, torch.tensor(500), [means])
    assert out.requires_grad
    assert sum(saved) < x[0].numel(), saved  # less than one view's worth for all 16 views


def _toy_hook(chunk_size, guidance_scale):
    model = load("toy", device=torch.device("cpu"))
    parts = model.differentiable
    red_or_blue = model.encode_prompts(["red or blue"])
    cond = GuidedCondition(red_or_blue, model.encode_prompts([""]), guidance_scale)
    tasks = panorama_tasks(16, 64, 16, 4)  # 13 views of 16 × 16 px
    settings = SyncSettings(weight=20.0, decay=0.95, chunk_size=chunk_size)
    guided = ClassifierFreeGuidance(parts.denoiser)
    hook = SyncDiffusion(guided, parts.decode, statistics_distance, tasks, [cond], 6, settings, (16, 64))
    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(50)
    canvas = torch.randn(1, 3, 16, 64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([canvas[..., 4 * i : 4 * i + 16] for i in range(13)])
    context = HookContext(1, scheduler.timesteps[1], tasks, range(13), 1, scheduler, canvas)
    return hook, x, context


@pytest.mark.float_sensitive
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_merged_conditions_and_default_batches_give_the_same_update(guidance_scale):
    reference_hook, x, context = _toy_hook(1, guidance_scale)  # one view per gradient batch: nothing merged
    reference = reference_hook(x, context)
    assert float((reference - x).abs().max()) > 0
    for chunk_size in (None, 5):  # None: all 12 moving views in one batch
        hook, _, _ = _toy_hook(chunk_size, guidance_scale)
        assert_close_scaled(hook(x, context), reference, rel=REL_BATCHING, what=f"update, chunks {chunk_size}")


def _slices(out: torch.Tensor) -> int:
    """SliceBackward nodes in the graph behind ``out``."""
    seen, stack, count = set(), [out.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == "SliceBackward0"
        stack.extend(n for n, _ in node.next_functions)
    return count


def test_guidance_gathers_rows_without_per_view_slices():
    """Guidance calls the model once and gathers rows with one index each way: the number of slices in the
    autograd graph does not grow with the views (per-view slices made SyncDiffusion's backward O(views²))."""
    calls: list[tuple[int, int]] = []

    def model(x, t, conds, views=None):
        calls.append((x.shape[0], len(conds)))
        return x * 2.0 + torch.cat(list(conds)).reshape(-1, 1, 1, 1)

    guidance = ClassifierFreeGuidance(model)
    for scale, rows in ((1.0, 8), (3.0, 16)):
        conds = [GuidedCondition(torch.zeros(1), torch.ones(1), scale, 0.5) for _ in range(8)]
        x = torch.randn(8, 3, 4, 4).requires_grad_(True)
        calls.clear()
        out = guidance(x, torch.tensor(1), conds)
        assert calls == [(rows, 8 if scale == 1.0 else 16)]
        assert _slices(out) <= 3
        # the same numbers as guiding each view on its own
        for v in range(8):
            alone = guidance(x[v : v + 1], torch.tensor(1), conds[v : v + 1])
            assert torch.allclose(out[v : v + 1], alone, rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all()


def _conv_bank_distance(images, targets):
    """The loss as first written: a 6 × 3 × 3 × 3 convolution bank (R, G, B; d/dx, d/dy, ∇² of luminance)."""
    w = torch.zeros(6, 3, 3, 3, dtype=images.dtype)
    dx = torch.tensor([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]], dtype=images.dtype)
    lap = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=images.dtype)
    for c, y in enumerate((0.299, 0.587, 0.114)):
        w[c, c, 1, 1] = 1.0
        w[3, c], w[4, c], w[5, c] = y * dx, y * dx.T, y * lap

    def stats(x):
        out = []
        for scale in (1, 2, 4):
            if scale > 1:
                x = F.avg_pool2d(x, 2)
            f = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w).flatten(2)
            m = f.mean(-1)
            c = f - m[..., None]
            out.append((m, c @ c.transpose(1, 2) / c.shape[-1]))
        return out

    total = sum(
        (ma - mb).pow(2).sum(-1) + (ga - gb).pow(2).sum((-2, -1))
        for (ma, ga), (mb, gb) in zip(stats(images), stats(targets), strict=True)
    )
    return total / 3


@pytest.mark.float_sensitive
def test_builtin_loss_equals_the_convolution_bank_and_broadcasts_its_target():
    g = torch.Generator().manual_seed(4)
    images = (torch.randn(6, 3, 16, 24, generator=g) * 0.3).clamp(-1, 1)
    target = (torch.randn(1, 3, 16, 24, generator=g) * 0.3 + 0.2).clamp(-1, 1)
    expected = _conv_bank_distance(images, target.repeat(6, 1, 1, 1))
    assert_close_scaled(statistics_distance(images, target.repeat(6, 1, 1, 1)), expected, rel=REL_LOSS, what="loss")
    assert_close_scaled(statistics_distance(images, target.expand(6, -1, -1, -1)), expected, rel=REL_LOSS, what="")


def test_is_synchronised_is_the_step_size_schedule():
    for settings in (
        SyncSettings(),
        SyncSettings(stop_step=None),
        SyncSettings(weight=10.0, decay=0.5, stop_step=7, every=3),
        SyncSettings(weight=0.0),
        SyncSettings(stop_step=0),
    ):
        assert [settings.is_synchronised(i) for i in range(12)] == [settings.step_size(i) > 0 for i in range(12)]
    assert [SyncSettings(stop_step=7, every=3).is_synchronised(i) for i in range(8)] == [
        False, False, True, False, False, True, False, False,
    ]  # fmt: skip
    assert not SyncSettings(weight=0.0).is_synchronised(0)
    assert [SyncSettings(weight=5.0, stop_step=4, every=2).is_synchronised(i) for i in range(6)] == [
        False, True, False, True, False, False,
    ]  # fmt: skip


def test_exact_denoiser_takes_non_contiguous_crops():
    """The engine's crops are a permuted view (view-major); guidance passes them on as they are."""
    field = GaussianField(3.0, 0.3)
    x = torch.randn(3, 2, 3, 8, 8).permute(1, 0, 2, 3, 4).reshape(6, 3, 8, 8)[::2]
    assert not x.is_contiguous()
    mean = torch.full((3, 3), 0.2)
    assert torch.equal(field.predict(x, mean, 0.5, 0.8), field.predict(x.contiguous(), mean, 0.5, 0.8))
