"""SyncDiffusion: the x₀ formula, the update, its equivalences, the exact mixture oracle, the losses."""

from __future__ import annotations

import math
import sys
import types
import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from multidiffusion.adapters.metrics.lpips import LpipsUnavailable, lpips_loss
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, panorama_tasks
from multidiffusion.core.engine.foresee import foresee_x0
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.sync import SyncDiffusion, SyncSettings, centre_view
from multidiffusion.core.metrics.coherence import colour_spread, crop_grid
from multidiffusion.core.metrics.statistics_loss import statistics_distance
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.oracle.stats import expected_crop_colour_variance
from multidiffusion.core.types import HookContext
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.modes.sync import resolve_loss
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.tiny_models import loaded

# Relative to max|expected| (tests/helpers/numerics.py). The SyncDiffusion update through the tiny VAE and UNet,
# gradient
# batched 1 vs all views: measured 2.9e-8 here; batch-size-dependent kernels elsewhere give up to ~7e-7 on the UNet
# (tests/pipeline/test_facade.py), so the bound is the UNet's.
REL_CHUNKS = 1e-5
# x̂₀ from one scheduler formula vs the scheduler's own (a few float32 operations, |x̂₀| up to ~75): measured 1.6e-7.
REL_X0 = 2e-6

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.mark.float_sensitive
@pytest.mark.parametrize(
    ("cls", "prediction"),
    [
        (DDIMScheduler, "epsilon"),
        (DDIMScheduler, "v_prediction"),
        (DDPMScheduler, "epsilon"),
        (EulerDiscreteScheduler, "epsilon"),
        (EulerDiscreteScheduler, "v_prediction"),
    ],
)
def test_foreseen_x0_is_the_schedulers_own(cls, prediction):
    """Eq. 10 as each scheduler computes it: our x̂₀ equals ``step(...).pred_original_sample``."""
    g = torch.Generator().manual_seed(0)
    extra = {} if cls is EulerDiscreteScheduler else {"clip_sample": False}  # SD's configs do not clip
    scheduler = cls(**SD, prediction_type=prediction, **extra)
    scheduler.set_timesteps(10)
    x = torch.randn(2, 4, 8, 8, generator=g) * float(scheduler.init_noise_sigma)
    for i, t in enumerate(scheduler.timesteps[:4]):
        out = torch.randn(2, 4, 8, 8, generator=g)
        ours = foresee_x0(scheduler, out, x, t)
        step = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(i))
        assert_close_scaled(ours, step.pred_original_sample, rel=REL_X0, what=f"x̂₀ at step {i}")
        x = step.prev_sample


@pytest.mark.float_sensitive
def test_foreseen_x0_matches_dpm_solver_karras():
    """DPM-Solver++ with Karras sigmas: the scheduler's own data prediction (convert_model_output)."""
    scheduler = DPMSolverMultistepScheduler(**SD, use_karras_sigmas=True)
    scheduler.set_timesteps(8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    for t in scheduler.timesteps[:3]:
        out = torch.randn(1, 4, 8, 8, generator=g)
        ours = foresee_x0(scheduler, out, x, t)
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        theirs = scheduler.convert_model_output(out, sample=x)
        assert_close_scaled(ours, theirs, rel=REL_X0, what="x̂₀ vs convert_model_output")
        x = scheduler.step(out, t, x).prev_sample


def test_sync_settings_schedule_and_validation():
    s = SyncSettings(weight=10.0, decay=0.5, stop_step=4, every=2)
    assert [s.step_size(i) for i in range(6)] == [0.0, 5.0, 0.0, 1.25, 0.0, 0.0]
    assert SyncSettings(stop_step=None).step_size(49) == pytest.approx(20 * 0.95**49)
    for bad in (
        dict(weight=-1.0),
        dict(weight=math.nan),
        dict(decay=0.0),
        dict(decay=1.5),
        dict(stop_step=-1),
        dict(every=0),
        dict(anchor=-2),
        dict(chunk_size=0),
    ):
        with pytest.raises(InvalidInputError):
            SyncSettings(**bad)


def test_centre_view():
    tasks = panorama_tasks(8, 40, 8, 4)  # 9 views in one row
    assert centre_view([t.view for t in tasks], 8, 40) == 4


def _call(pipe, **kw):
    args = dict(height=128, width=256, num_inference_steps=3, output_type="latent", progress=False)
    return pipe("a photo of the dolomites", generator=torch.Generator().manual_seed(3), **args, **kw).latents


def test_sync_off_and_weight_zero_equal_plain_exactly(small_pipe, one_thread):
    """Sync that never moves a view is plain MultiDiffusion with the weights sync defaults to (uniform)."""
    assert torch.equal(_call(small_pipe, sync=False, sync_weight=7.0), _call(small_pipe))
    plain = _call(small_pipe, weights="uniform")
    assert torch.equal(_call(small_pipe, sync=True, sync_weight=0.0, sync_loss="builtin"), plain)
    assert torch.equal(_call(small_pipe, sync=True, sync_stop_step=0, sync_loss="builtin"), plain)
    synced = _call(small_pipe, sync=True, sync_loss="builtin", sync_weight=2000.0)
    assert not torch.equal(synced, plain) and torch.isfinite(synced).all()


def _sd_hook(small, chunk_size=None, weight=1.0):
    model = loaded(small)
    parts = model.differentiable
    cond = GuidedCondition(model.encode_prompts(["a red barn"]), model.encode_prompts([""]), 7.5)
    tasks = panorama_tasks(16, 32, 16, 8)  # 3 views of 16 cells
    settings = SyncSettings(weight=weight, decay=1.0, chunk_size=chunk_size)
    guided = ClassifierFreeGuidance(parts.denoiser)
    hook = SyncDiffusion(guided, parts.decode, statistics_distance, tasks, [cond], 1, settings, (16, 32))
    scheduler = DDIMScheduler(**SD)
    scheduler.set_timesteps(10)
    canvas = torch.randn(1, 4, 16, 32, generator=torch.Generator().manual_seed(0))
    x = torch.cat([canvas[..., 0:16], canvas[..., 8:24], canvas[..., 16:32]])
    context = HookContext(2, scheduler.timesteps[2], tasks, range(3), 1, scheduler, canvas)
    return hook, x, context, model


def test_one_update_lowers_that_views_loss_on_tiny_sd(small, one_thread):
    """The gradient flows through the VAE decoder and the guided UNet, and points downhill."""
    hook, x, context, model = _sd_hook(small, weight=1.0)
    target = hook.anchor_image(context)

    def loss(v: torch.Tensor) -> float:
        with torch.no_grad():
            image = hook._foresee_image(v, context, [hook.conditions[0]], [hook.tasks[0].view])
            return float(hook.loss(image, target).sum())

    before = loss(x[:1])
    # Scale the step so it is small against the latent: a first-order descent step must lower the loss.
    probe = SyncDiffusion(
        hook.denoiser,
        hook.decode,
        hook.loss,
        hook.tasks,
        hook.conditions,
        1,
        SyncSettings(weight=1.0, decay=1.0),
        (16, 32),
    )
    grad_step = x - probe(x, context)
    assert float(grad_step[1].abs().max()) == 0.0  # the anchor view is not moved
    assert float(grad_step[0].abs().max()) > 0  # a gradient reached the latent through codec and UNet
    step = 1e-3 / float(grad_step[0].abs().max())
    after = loss(x[:1] - step * grad_step[:1])
    assert after < before
    assert all(p.grad is None for p in model.components["unet"].parameters())  # weights untouched


@pytest.mark.float_sensitive
def test_gradient_chunks_do_not_change_the_update(small, one_thread):
    hook_all, x, context, _ = _sd_hook(small)
    hook_one, _, _, _ = _sd_hook(small, chunk_size=1)
    assert_close_scaled(hook_one(x, context), hook_all(x, context), rel=REL_CHUNKS, what="gradient chunks 1 vs all")


# --- the exact mixture oracle (docs/design.md §9) -----------------------------------------------------------

H, W, WINDOW, STRIDE, CROP, SEEDS = 16, 256, 16, 4, 16, 8


def _toy_runs(prompt: str, **kw) -> list[torch.Tensor]:
    """Eight seeds on the toy model with the paper's uniform weights (the figures below were calibrated on them)."""
    kw.setdefault("weights", "uniform")
    pipe = MultiDiffusionPipeline.from_pretrained("toy", device="cpu")
    out = []
    for seed in range(SEEDS):
        r = pipe(
            prompt,
            height=H,
            width=W,
            window=WINDOW,
            stride=STRIDE,
            num_inference_steps=50,
            output_type="pt",
            progress=False,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )
        out.append(r.latents[0])
    return out


def _spread(images: list[torch.Tensor]) -> float:
    """sqrt of the seed-averaged colour variance over crops."""
    return (sum(colour_spread(crop_grid(x, CROP)) ** 2 for x in images) / len(images)) ** 0.5


def test_toy_mixture_sync_cuts_the_colour_spread(one_thread):
    field = GaussianField(3.0, 0.3)
    theory = expected_crop_colour_variance(field, H, W, CROP) ** 0.5
    single = _spread(_toy_runs("red"))
    plain = _toy_runs("red or blue")
    synced = _toy_runs("red or blue", sync=True, sync_loss="builtin")
    # Without sync and without ambiguity, the spread is the exact field's (MultiDiffusion keeps 91–97 % of
    # the variance, docs/theory.md): measured 0.113 against 0.119.
    assert 0.8 * theory < single < 1.1 * theory
    # An ambiguous prompt makes a montage: about half the crops take the other colour.
    anchor = W // 2 // CROP

    def disagree(x: torch.Tensor) -> float:
        red = crop_grid(x, CROP).mean((2, 3))[:, 0] > 0
        return float((red != red[anchor]).float().mean())

    assert 0.25 < sum(map(disagree, plain)) / SEEDS < 0.75
    assert sum(map(disagree, synced)) / SEEDS <= 0.05
    reduction = 1 - _spread(synced) / _spread(plain)
    assert reduction >= 0.3, reduction


# --- the losses ------------------------------------------------------------------------------------------


def test_builtin_loss_identical_zero_different_larger():
    g = torch.Generator().manual_seed(0)
    texture = torch.randn(1, 3, 32, 64, generator=g) * 0.2
    a, b = texture[..., :32], texture[..., 32:]  # two crops of one texture
    red = a + torch.tensor([0.6, -0.4, -0.4])[None, :, None, None]
    assert float(statistics_distance(a, a)) == 0.0
    same_style = float(statistics_distance(a, b))
    assert same_style < 0.1 * float(statistics_distance(a, red))
    assert float(statistics_distance(a, a * 3)) > same_style  # contrast counts too


def test_lpips_missing_is_one_clear_error_and_default_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips raises ImportError
    with pytest.raises(LpipsUnavailable, match=r"LPIPS is not available .*docs/sync.md"):
        lpips_loss("cpu")
    with pytest.raises(LpipsUnavailable):
        resolve_loss("lpips", "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss, name = resolve_loss(None, "cpu")
    assert name == "builtin" and loss is statistics_distance
    assert len(caught) == 1 and "built-in" in str(caught[0].message)


def test_lpips_weights_missing_is_one_clear_error(monkeypatch):
    def no_weights(**_):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>\nmore")

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=no_weights))
    with pytest.raises(LpipsUnavailable, match="could not load its VGG16 weights") as info:
        lpips_loss("cpu")
    assert "\n" not in str(info.value)


def test_lpips_wrapper_returns_one_distance_per_image(monkeypatch):
    class FakeLpips(torch.nn.Module):  # the package's call contract: (B, 1, 1, 1) distances
        def __init__(self, net: str, verbose: bool) -> None:
            super().__init__()
            assert net == "vgg"
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, a, b, normalize=False):
            assert not normalize
            return ((a - b) ** 2).mean((1, 2, 3), keepdim=True) * self.w

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLpips))
    loss = lpips_loss("cpu")
    a = torch.zeros(3, 3, 8, 8, requires_grad=True)
    d = loss(a, torch.ones(3, 3, 8, 8))
    assert d.shape == (3,) and torch.allclose(d, torch.ones(3))
    d.sum().backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0
