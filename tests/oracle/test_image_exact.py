"""Image inputs on the exact Gaussian-field model: outpaint, inpaint and upscale measured against the truth.

The toy model's codec is the identity, so "the known region is kept" is a bitwise statement, and its field is
Gaussian, so the exact distribution of the margins given the known pixels is a formula
(:func:`multidiffusion.core.oracle.conditional.conditional`): an outpaint can be compared with what a perfect
inpainter would draw, not only with other code.

Known regions are kept by blending (replacement) after every step (core/features/known.py): the known pixels are put
back noised to the next step's level. That is an approximation (RePaint, Lugmayr et al. 2022, §4): the model sees the
known part noised, but nothing moves the unknown part toward the known content except its own posterior mean.
The deterministic samplers here are affine in the noise, so the *expected* outpaint is the run from zero noise
(x_T = 0, ε = 0); the tests compute it, check that the pipeline's sample mean converges to it, and compare it with
the exact conditional mean. Measured on 32 × 96 px canvases (the 32-px image in the middle, 32 px outpainted on
each side), 4 known images (exact draws of the field) × 48 canvases, window 32 px, stride 8, 40 steps; the
figures for SEED = 0, in brackets the range over SEED = 0, 100, …, 500:

| | DDIM, uniform weights, feather 0 | the same, feather 4 (default) | DPM++ 2M Karras, feathered weights, feather 0 |
|---|---|---|---|
| correlation across the border / far from it | 0.68 (0.66–0.73) | 0.82 (0.82–0.82) | 0.89 (0.87–0.92) |
| unexplained fraction, d = 1, 2, 3 px | 0.56, 0.81, 0.96 | 0.71, 0.89, 0.98 | 0.38, 0.74, 0.96 |
| RMS(sample mean − E[x ∣ known]) / σ, d = 1, 2, 3 | 0.55, 0.80, 0.94 | 0.71, 0.88, 0.96 | 0.38, 0.73, 0.94 |
| its standard error / σ | 0.08, 0.12, 0.14 | 0.11, 0.13, 0.14 | 0.06, 0.11, 0.15 |
| variance / σ², d = 1, 2, 3 (exact: 8e-6, 5e-4, 8e-3) | 0.34, 0.66, 0.89 | 0.53, 0.77, 0.91 | 0.18, 0.63, 1.01 |
| variance / σ² ≥ 24 px from the border (exact: 1) | 0.86 (0.86–0.90) | 0.86 | 0.99 (0.99–1.04) |

The "unexplained fraction" is RMS(E[outpaint] − E[x ∣ known]) / RMS(μ − E[x ∣ known]) over the columns d px from
the border: 0 is the exact conditional mean, 1 a sampler that ignores the image. The image steers only the first
2–3 px (ℓ = 3) of the margins, where the exact conditional mean still carries it 6–8 px out; from 9 px on the
expected outpaint is the text-to-image panorama's to 1e-3 σ. More steps do not help (one 96-px window, DDIM 500
steps: 0.43, 0.75, 0.95), so it is the blending, not the fusion or the discretisation. The issue's claims (a)
border correlation ≥ 0.95 of the interior's and (c) the mean following the exact conditional mean do not hold for
blended sampling: they are strict xfails below, and the characterisation test pins the measured figures so that a
change, better or worse, is noticed. Far from the border (b) holds with a sampler that keeps σ² at all; DDIM with
uniform weights loses 13 % with or without an image (docs/theory.md).

The conditional samplers of core/features/conditional.py are measured at the end (heavy: 10 and 6.4 model passes per
step): RePaint's resampling (U = 10) and the Tweedie projection (k = 8) meet claim (a) with feather 0 (0.992, 0.961),
and cut the mean's error 1 px out from 0.55 σ to 0.25 σ and 0.17 σ, but neither meets claim (c) (a strict xfail with
the reason: 3 px out the exact mean is below float32's resolution). docs/image_inputs.md has the whole table
(bench/conditional.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image

from multidiffusion.adapters import make_scheduler
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, sample
from multidiffusion.core.engine.tasks import panorama_tasks
from multidiffusion.core.features.conditional import ConditionalSampler, known_hook
from multidiffusion.core.features.known import KnownRegion, latent_mask
from multidiffusion.core.oracle.conditional import Conditional, conditional
from multidiffusion.core.oracle.field import GaussianField, se_kernel
from multidiffusion.core.oracle.prompts import prompt_colour
from multidiffusion.core.oracle.stats import neighbour_correlation
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.numerics import assert_close_scaled

PROMPT = "mountain"  # μ ≈ (−0.10, −0.14, −0.06): exact draws with σ = 0.3 mostly stay inside [−1, 1]
IMAGE_PX = 32  # the known image, square
MARGIN = 32  # px outpainted on the left and on the right
HEIGHT, WIDTH = IMAGE_PX, IMAGE_PX + 2 * MARGIN
WINDOW, STRIDE, STEPS = 32, 8, 40
NUM_KNOWN = 4  # known images (exact draws)
CANVASES = 48  # outpaints per known image (num_images_per_prompt)
FAR_PX = 24  # 8ℓ: columns at least this far from the border have the prior's distribution (to 1e-6)
DEFAULT_FEATHER = 4.0  # the outpaint default (pipeline.modes.image_start.DEFAULT_FEATHER_PX)
SEED = 0  # known images: the first in-range draws from seed SEED on; outpaints of image i: seed SEED + i


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread is fastest (conftest)


@pytest.fixture(scope="module")
def pipe() -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline.from_pretrained("toy", device="cpu")


def _field(pipe: MultiDiffusionPipeline) -> GaussianField:
    return pipe.model.components["field"]


def _mu() -> torch.Tensor:
    return torch.tensor(prompt_colour(PROMPT), dtype=torch.float64)


# --- the helper: exact Gaussian conditioning -----------------------------------------------------------------


@pytest.mark.float_sensitive
def test_conditional_matches_the_dense_formula():
    """conditional() against Σ_uk Σ_kk⁻¹ on the dense covariance, on a canvas small and smooth enough for jitter 0."""
    field = GaussianField(1.0, 0.5)
    h, w = 5, 6
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[1:4, 0:3] = True
    mask[0, 5] = True
    mask[4, 4] = True
    mu = torch.tensor([0.1, -0.2], dtype=torch.float64)
    values = field.sample(3, h, w, mu, generator=torch.Generator().manual_seed(0), channels=2).double()
    got = conditional(field, values, mask, mu, jitter=0.0)

    sigma = field.covariance(h, w)
    k, u = mask.flatten().nonzero().squeeze(1), (~mask).flatten().nonzero().squeeze(1)
    gain = torch.linalg.solve(sigma[k][:, k], sigma[k][:, u])  # Σ_kk⁻¹ Σ_ku
    flat = values.reshape(3, 2, h * w)
    mean_u = mu[:, None] + (flat[..., k] - mu[:, None]) @ gain
    cov_u = sigma[u][:, u] - sigma[u][:, k] @ gain
    # float64, condition number of Σ_kk 87: measured 5e-16 relative.
    assert_close_scaled(got.mean.reshape(3, 2, h * w)[..., u], mean_u, rel=1e-10, what="conditional mean")
    assert_close_scaled(got.covariance, cov_u, rel=1e-10, what="conditional covariance")
    assert torch.equal(got.unknown, u)
    assert torch.equal(got.mean.reshape(3, 2, h * w)[..., k], flat[..., k])  # known pixels are returned as given
    assert bool((got.variance.flatten()[k] == 0).all())
    assert_close_scaled(got.variance.flatten()[u], cov_u.diagonal(), rel=1e-10, what="conditional variance")


@pytest.mark.float_sensitive
def test_conditional_next_to_a_known_block_hardly_depends_on_the_jitter():
    """Next to a known block the conditional mean is determined by float64 arithmetic (ℓ = 3): between jitter 1e-14
    and 1e-10 it moves by 0.002 σ (RMS) 1 px out and 0.014 σ 2 px out (measured), and a full-height block gives the
    1-D conditional along each row (the row kernel cancels; measured 2e-5 σ and 1.4e-4 σ). Ill-conditioned solves
    on two kernel paths, hence the marker."""
    field = GaussianField()
    h, w, left, block = 16, 40, 12, 16
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:, left : left + block] = True
    values = field.sample(4, h, w, generator=torch.Generator().manual_seed(3))
    low, high = (conditional(field, values, mask, jitter=j).mean for j in (1e-14, 1e-10))

    def rms_at(diff: torch.Tensor, d: int) -> float:
        return float(diff[..., [left - d, left + block - 1 + d]].pow(2).mean().sqrt()) / field.sigma

    assert rms_at(high - low, 1) < 0.01
    assert rms_at(high - low, 2) < 0.05
    k_w = se_kernel(w, field.length_scale)
    cols = torch.arange(left, left + block)
    gain = torch.linalg.solve(k_w[cols][:, cols] + 1e-14 * torch.eye(block, dtype=torch.float64), k_w[cols])
    one_d = values.double()[..., cols] @ gain  # x_u = x_k K_kk⁻¹ K_ku along each row
    assert rms_at(low - one_d, 1) < 0.002
    assert rms_at(low - one_d, 2) < 0.002


# --- outpainting: the runs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    feather: float = 0.0
    scheduler: str = "ddim"
    weights: str = "uniform"
    sampler: ConditionalSampler | None = None  # None: the blend


HARD = Setting(feather=0.0)
FEATHERED = Setting(feather=DEFAULT_FEATHER)
VARIANCE_KEEPING = Setting(scheduler="dpmpp_2m_karras", weights="feathered")  # keeps σ² (docs/theory.md)
SETTINGS = {"feather0": HARD, "feather4": FEATHERED, "dpmpp_feathered_weights": VARIANCE_KEEPING}


@dataclass(frozen=True)
class Outpaints:
    """One setting's runs: the pipeline's samples, the sampler's exact expectation, the exact conditional."""

    samples: torch.Tensor  # (NUM_KNOWN, CANVASES, 3, H, W) float64
    expected: torch.Tensor  # (NUM_KNOWN, 3, H, W): the run from zero noise
    known: torch.Tensor  # (NUM_KNOWN, 3, H, W): the input on its columns, 0 elsewhere
    exact: Conditional  # the field given the known columns


def _known_mask() -> torch.Tensor:
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[:, MARGIN : MARGIN + IMAGE_PX] = True
    return mask


@cache
def _known_images() -> tuple[torch.Tensor, ...]:
    """NUM_KNOWN exact draws of the field with the prompt's mean, as images (1, 3, 32, 32) in [0, 1]: the draws of
    seeds SEED, SEED + 1, … that lie inside [−1, 1] (the pipeline's image range; about half of them do)."""
    field, mu = GaussianField(), _mu().float()
    images, seed = [], SEED
    while len(images) < NUM_KNOWN:
        x = field.sample(1, IMAGE_PX, IMAGE_PX, mu, generator=torch.Generator().manual_seed(seed))
        seed += 1
        if float(x.abs().max()) <= 1.0:
            images.append((x + 1) / 2)
    return tuple(images)


def _expected_outpaint(model, known: torch.Tensor, setting: Setting) -> torch.Tensor:
    """The pipeline's outpaint with every noise set to zero: the exact expectation of a deterministic sampler, which
    is affine in (x_T, ε) (docs/theory.md). The same pieces as pipeline.run.generate.generate, in the same order."""
    scheduler = make_scheduler(setting.scheduler, model.scheduler_config)
    model.set_timesteps(scheduler, STEPS, (WINDOW, WINDOW))
    if hasattr(scheduler, "set_begin_index"):  # as prepare_start does: add_noise then indexes by step
        scheduler.set_begin_index(0)
    zero = torch.zeros(1, 3, HEIGHT, WIDTH)
    mask = latent_mask(_known_mask().float()[None, None], 1, setting.feather)
    hook = known_hook(KnownRegion(known[None].float(), mask, zero), setting.sampler, scheduler)
    tasks = panorama_tasks(HEIGHT, WIDTH, WINDOW, STRIDE, weights=setting.weights)
    condition = GuidedCondition(positive=model.encode_prompts([PROMPT]))
    x = sample(ClassifierFreeGuidance(model.denoiser), scheduler, zero.clone(), tasks, [condition], post_step=[hook])
    return x[0].double()


_RUNS: dict[Setting, Outpaints] = {}


def _outpaints(pipe: MultiDiffusionPipeline, setting: Setting) -> Outpaints:
    if setting not in _RUNS:
        samples, expected, known = [], [], []
        for i, image in enumerate(_known_images()):
            out = pipe.outpaint(
                image,
                PROMPT,
                left=MARGIN,
                right=MARGIN,
                feather=setting.feather,
                window=WINDOW,
                stride=STRIDE,
                weights=setting.weights,
                scheduler=setting.scheduler,
                conditional=setting.sampler,
                num_inference_steps=STEPS,
                num_images_per_prompt=CANVASES,
                generator=torch.Generator().manual_seed(SEED + i),
                output_type="latent",
                progress=False,
            )
            samples.append(out.latents.double())
            canvas = torch.zeros(3, HEIGHT, WIDTH)
            canvas[:, :, MARGIN : MARGIN + IMAGE_PX] = image[0] * 2.0 - 1.0  # read_image's [0, 1] → [−1, 1]
            known.append(canvas)
            if setting.sampler is not None and setting.sampler.passes_any:  # resampling draws noise: no zero run
                expected.append(out.latents.double().mean(0))
            else:
                expected.append(_expected_outpaint(pipe.model, canvas, setting))
        known_t = torch.stack(known)
        exact = conditional(_field(pipe), known_t, _known_mask(), _mu())
        _RUNS[setting] = Outpaints(torch.stack(samples), torch.stack(expected), known_t.double(), exact)
    return _RUNS[setting]


def _cols(d: int) -> list[int]:
    """The two columns d px outside the known image (left and right)."""
    return [MARGIN - d, MARGIN + IMAGE_PX - 1 + d]


def _far_cols() -> list[int]:
    return [c for c in range(WIDTH) if c <= MARGIN - FAR_PX - 1 or c >= MARGIN + IMAGE_PX + FAR_PX]


@dataclass(frozen=True)
class Figures:
    border_corr: float  # mean of the two column pairs across the border
    far_corr: float  # mean over the column pairs ≥ FAR_PX from the border
    known_corr: float  # mean over the pairs inside the known image (exact draws)
    far_variance: float  # per-pixel variance / σ², columns ≥ FAR_PX from the border
    unexplained: dict[int, float]  # d → RMS(E − m) / RMS(μ − m), m the exact conditional mean
    rms_error: dict[int, float]  # d → RMS(sample mean − m) / σ
    rms_se: dict[int, float]  # d → RMS standard error of the sample mean / σ
    z_expected: float  # RMS over d = 1…8 of (sample mean − E) / its standard error
    variance: dict[int, float]  # d → per-pixel variance / σ²
    exact_variance: dict[int, float]  # d → exact conditional variance / σ²


def _figures(pipe: MultiDiffusionPipeline, runs: Outpaints) -> Figures:
    field, mu = _field(pipe), _mu()
    x = runs.samples
    pooled = x.reshape(-1, 3, HEIGHT, WIDTH)
    corr = neighbour_correlation(pooled, mu.expand(pooled.shape[0], 3))
    far_pairs = [c for c in _far_cols() if c + 1 in _far_cols()]
    mean = x.mean(1)  # (K, 3, H, W)
    var = x.var(1)  # about each known image's own sample mean
    se = (var / CANVASES).sqrt()
    m = runs.exact.mean
    centre = mu[:, None, None]

    def rms(t: torch.Tensor) -> float:
        return float(t.pow(2).mean().sqrt())

    ds = range(1, 9)
    near = [c for d in ds for c in _cols(d)]
    return Figures(
        border_corr=float(corr[[MARGIN - 1, MARGIN + IMAGE_PX - 1]].mean()),
        far_corr=float(corr[far_pairs].mean()),
        known_corr=float(corr[MARGIN : MARGIN + IMAGE_PX - 1].mean()),
        far_variance=float(var[..., _far_cols()].mean()) / field.variance,
        unexplained={d: rms((runs.expected - m)[..., _cols(d)]) / rms((centre - m)[..., _cols(d)]) for d in ds},
        rms_error={d: rms((mean - m)[..., _cols(d)]) / field.sigma for d in ds},
        rms_se={d: rms(se[..., _cols(d)]) / field.sigma for d in ds},
        z_expected=rms(((mean - runs.expected) / se)[..., near]),
        variance={d: float(var[..., _cols(d)].mean()) / field.variance for d in ds},
        exact_variance={d: float(runs.exact.variance[:, _cols(d)].mean()) / field.variance for d in ds},
    )


def _report(name: str, f: Figures) -> str:
    d3 = (1, 2, 3)
    return (
        f"{name}: border corr {f.border_corr:.4f}, far {f.far_corr:.4f} (ratio {f.border_corr / f.far_corr:.3f}), "
        f"known {f.known_corr:.4f}; far variance/σ² {f.far_variance:.3f}; unexplained d=1..3 "
        f"{[round(f.unexplained[d], 3) for d in d3]}; RMS error/σ {[round(f.rms_error[d], 3) for d in d3]} "
        f"(standard error {[round(f.rms_se[d], 3) for d in d3]}); z vs E {f.z_expected:.2f}; variance/σ² "
        f"{[round(f.variance[d], 3) for d in d3]} vs exact {[f'{f.exact_variance[d]:.1e}' for d in d3]}"
    )


@pytest.mark.parametrize("name", ["feather0", "feather4", "dpmpp_feathered_weights"])
def test_outpaint_sample_mean_is_the_samplers_expectation(pipe, name):
    """The statistics below read the exact expectation from a zero-noise run of the same pieces: the pipeline's
    sample mean must converge to it (RMS z-score over the 8 px next to the border ≈ 1; measured 1.09, and 0.98–1.12
    over six seed sets)."""
    f = _figures(pipe, _outpaints(pipe, SETTINGS[name]))
    print(_report(name, f))
    assert 0.8 <= f.z_expected <= 1.25, f.z_expected


def test_outpaint_keeps_the_image_exactly_with_feather_0(pipe):
    runs = _outpaints(pipe, HARD)
    kept = runs.samples[..., MARGIN : MARGIN + IMAGE_PX]
    assert torch.equal(kept, runs.known[:, None, ..., MARGIN : MARGIN + IMAGE_PX].expand_as(kept))


def _text_to_image_expectation(model, setting: Setting) -> torch.Tensor:
    """The same sampler's expected text-to-image panorama (no image, zero noise): (3, H, W) float64."""
    scheduler = make_scheduler(setting.scheduler, model.scheduler_config)
    model.set_timesteps(scheduler, STEPS, (WINDOW, WINDOW))
    tasks = panorama_tasks(HEIGHT, WIDTH, WINDOW, STRIDE, weights=setting.weights)
    condition = GuidedCondition(positive=model.encode_prompts([PROMPT]))
    x = sample(ClassifierFreeGuidance(model.denoiser), scheduler, torch.zeros(1, 3, HEIGHT, WIDTH), tasks, [condition])
    return x[0].double()


def test_outpaint_far_from_the_border_is_the_prior(pipe):
    """(b) ≥ 24 px (8ℓ) from the border the exact conditional is the prior N(μ, σ²) (to 1e-6). With a sampler that
    keeps σ² (DPM++ 2M Karras, feathered view weights) the outpaint's per-pixel variance there is within 10 % of σ²
    (measured 0.99; 0.99–1.04 over six seed sets). DDIM with uniform weights loses variance with or without an image
    (0.86 here; a text-to-image panorama of the same settings 0.87): that is the sampler and the fusion
    (docs/theory.md), not the image. In every setting the expected canvas there is the text-to-image panorama's
    (measured ≤ 2e-5 σ RMS)."""
    f = _figures(pipe, _outpaints(pipe, VARIANCE_KEEPING))
    print(_report("dpmpp_2m_karras, feathered weights", f))
    assert abs(f.far_variance - 1.0) <= 0.10, f.far_variance
    for setting in SETTINGS.values():
        runs = _outpaints(pipe, setting)
        t2i = _text_to_image_expectation(pipe.model, setting)
        far = (runs.expected - t2i)[..., _far_cols()]
        assert float(far.pow(2).mean().sqrt()) <= 1e-3 * _field(pipe).sigma, setting


@pytest.mark.parametrize("name", ["feather0", "feather4"])
def test_outpaint_border_as_measured(pipe, name):
    """Characterisation of blended sampling at the border (the module docstring's table), with margins over the
    figures of six seed sets (feather 0 / 4: correlation ratio 0.66–0.73 / 0.82; unexplained fraction 1 px out
    0.52–0.58 / 0.67–0.73, 3 px out ≥ 0.95 / 0.97; variance 1 px out 0.33–0.34 / 0.51–0.53 σ²). It fails if the image
    stops steering the margins (ratio falling, fraction toward 1) or the method improves (then update the figures and
    the xfails below)."""
    f = _figures(pipe, _outpaints(pipe, SETTINGS[name]))
    ratio = f.border_corr / f.far_corr
    low, high = {"feather0": (0.55, 0.80), "feather4": (0.70, 0.92)}[name]
    assert low <= ratio <= high, ratio
    assert 0.35 <= f.unexplained[1] <= 0.85, f.unexplained
    assert f.unexplained[3] >= 0.85, f.unexplained
    # The image does narrow the margin next to it, but far less than the exact conditional: 1e-5 σ² 1 px out.
    assert f.variance[1] <= 0.7, f.variance
    for d in (1, 2, 3):
        assert f.exact_variance[d] <= f.variance[d] <= 1.1, (d, f.variance, f.exact_variance)
    assert abs(f.known_corr - _field(pipe).correlation(1)) <= 0.015  # the kept image, exact draws: 0.939–0.949


@pytest.mark.xfail(
    strict=True, reason="blended sampling: border / interior correlation 0.66–0.73 (feather 0), 0.82 (4)"
)
@pytest.mark.parametrize("name", ["feather0", "feather4"])
def test_outpaint_border_correlation_claim(pipe, name):
    """The issue's claim (a): across the border the neighbour correlation is ≥ 0.95 of the interior's."""
    f = _figures(pipe, _outpaints(pipe, SETTINGS[name]))
    assert f.border_corr >= 0.95 * f.far_corr


@pytest.mark.xfail(strict=True, reason="blended sampling: the mean 1–3 px out is 0.7–0.9 σ (RMS) off E[x | known]")
@pytest.mark.parametrize("name", ["feather0", "feather4"])
def test_outpaint_mean_follows_the_exact_conditional_claim(pipe, name):
    """The issue's claim (c): next to the border the expected outpaint is the exact conditional mean (here within
    0.1 σ RMS over the first 3 px; the reference itself is determined to 0.08 σ there, see conditional())."""
    runs = _outpaints(pipe, SETTINGS[name])
    err = (runs.expected - runs.exact.mean)[..., [c for d in (1, 2, 3) for c in _cols(d)]]
    assert float(err.pow(2).mean().sqrt()) <= 0.1 * _field(pipe).sigma


# --- conditional samplers (core/features/conditional.py; the table in docs/image_inputs.md) ---------------------

REPAINT = Setting(sampler=ConditionalSampler("repaint", 10))
TWEEDIE = Setting(sampler=ConditionalSampler("tweedie", iterations=8))
CONDITIONAL = {"repaint": REPAINT, "tweedie": TWEEDIE}


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["repaint", "tweedie"])
def test_conditional_samplers_meet_the_border_correlation_claim(pipe, name):
    """Claim (a) with feather 0 holds for RePaint's resampling (U = 10: ratio 0.992) and the Tweedie projection
    (k = 8 conjugate-gradient iterations: 0.961), where the blend gives 0.68."""
    f = _figures(pipe, _outpaints(pipe, CONDITIONAL[name]))
    print(_report(name, f))
    assert f.border_corr >= 0.95 * f.far_corr


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["repaint", "tweedie"])
def test_conditional_samplers_as_measured(pipe, name):
    """Characterisation: both keep the image bit for bit (feather 0) and pull the margin's mean toward E[x | known]
    (RMS error 1 px out: blend 0.55 σ, repaint 0.25 σ, tweedie 0.17 σ; 3 px out 0.94, 0.77, 0.61 σ), and narrow
    the variance next to the border (1 px out: 0.34, 0.07, 0.08 σ²; exact 8e-6). Far from the border the Tweedie
    projection keeps the blend's variance (0.86 σ², the DDIM / uniform-weights loss of docs/theory.md), resampling
    loses more (0.75): each pass through the fused views shrinks it again."""
    runs = _outpaints(pipe, CONDITIONAL[name])
    kept = runs.samples[..., MARGIN : MARGIN + IMAGE_PX]
    assert torch.equal(kept, runs.known[:, None, ..., MARGIN : MARGIN + IMAGE_PX].expand_as(kept))
    f = _figures(pipe, runs)
    blend = _figures(pipe, _outpaints(pipe, HARD))
    assert f.rms_error[1] <= 0.32 and f.rms_error[1] <= 0.6 * blend.rms_error[1], f.rms_error
    assert f.rms_error[3] <= 0.85 * blend.rms_error[3], f.rms_error
    assert f.variance[1] <= 0.15, f.variance
    low = {"repaint": 0.65, "tweedie": 0.80}[name]
    assert low <= f.far_variance <= blend.far_variance + 0.03, f.far_variance


TWEEDIE_DPM = Setting(scheduler="dpmpp_2m_karras", weights="feathered", sampler=ConditionalSampler("tweedie"))


@pytest.mark.heavy
def test_tweedie_with_a_variance_keeping_sampler_meets_the_claims_1_px_out(pipe):
    """The Tweedie projection (k = 8) with DPM++ 2M Karras and feathered weights: claim (a) (ratio 0.999), claim (c)
    1 px out (RMS error 0.06 σ; standard error 0.01 σ) and claim (b) far from the border (variance 0.99 σ²). 2 and 3
    px out the error is 0.22 and 0.50 σ (the xfail above)."""
    f = _figures(pipe, _outpaints(pipe, TWEEDIE_DPM))
    print(_report("tweedie, dpmpp_2m_karras", f))
    assert f.border_corr >= 0.95 * f.far_corr
    assert f.rms_error[1] <= 0.1, f.rms_error
    assert abs(f.far_variance - 1.0) <= 0.10, f.far_variance


@pytest.mark.heavy
def test_tweedie_inpaints_a_hole_of_twice_the_correlation_length(pipe):
    """A 6 × 6 px hole (2ℓ) in the middle of a 32 × 64 exact draw, 2 × 24 canvases, DDIM 40 steps, k = 16: the
    sample mean in the hole is within 0.1 σ (RMS) of E[x | known] (measured 0.055 σ with 4 × 48 canvases in
    bench/conditional.py; the blend 0.60 σ), and its variance is near the exact one's (0.003 σ² against 1e-5)."""
    field, mu = _field(pipe), _mu()
    h, w, hole = 32, 64, 6
    redraw = torch.zeros(h, w)
    redraw[13:19, 29:35] = 1.0
    samples, knowns, seed = [], [], 0
    while len(knowns) < 2:
        x = field.sample(1, h, w, mu.float(), generator=torch.Generator().manual_seed(seed))
        seed += 1
        if float(x.abs().max()) > 1.0:
            continue
        out = pipe.inpaint(
            (x + 1) / 2, redraw, PROMPT, feather=0.0, conditional=ConditionalSampler("tweedie", iterations=16),
            window=WINDOW, stride=STRIDE, weights="uniform", scheduler="ddim", num_inference_steps=STEPS,
            num_images_per_prompt=24, generator=torch.Generator().manual_seed(seed), output_type="latent",
            progress=False,
        )  # fmt: skip
        samples.append(out.latents.double())
        knowns.append(x[0].double())
    exact = conditional(field, torch.stack(knowns), redraw == 0, mu)
    inside = redraw > 0
    err = (torch.stack(samples).mean(1) - exact.mean)[..., inside]
    assert float(err.pow(2).mean().sqrt()) <= 0.1 * field.sigma
    assert float(torch.stack(samples).var(1)[..., inside].mean()) <= 0.02 * field.variance
    assert hole == 2 * field.length_scale


@pytest.mark.heavy
@pytest.mark.xfail(
    strict=True,
    reason="repaint U=10 / tweedie k=8: the mean 1–3 px out is 0.56 / 0.43 σ (RMS) off E[x | known] (blend 0.78)",
)
@pytest.mark.parametrize("name", ["repaint", "tweedie"])
def test_conditional_samplers_mean_claim(pipe, name):
    """Claim (c) for the samplers, on their sample means (48 canvases per image: standard error ≤ 0.04 σ 1–3 px out).
    Not met: the Tweedie projection converges toward it with more iterations (zero-noise run, one 96-px view: 8 → 32
    → 64 iterations give 0.09 → 0.04 → 0.03 σ at 1 px but 0.54 → 0.38 → 0.32 σ at 3 px), the way the exact mean with
    a jitter 1e-4 σ² differs from the one with 1e-14 (0.03, 0.13, 0.30 σ at 1, 2, 3 px): 3 px out the exact mean
    rests on eigenvalues of Σ_kk below float32's resolution, so no float32 sampler can be held to 0.1 σ there."""
    runs = _outpaints(pipe, CONDITIONAL[name])
    err = (runs.samples.mean(1) - runs.exact.mean)[..., [c for d in (1, 2, 3) for c in _cols(d)]]
    assert float(err.pow(2).mean().sqrt()) <= 0.1 * _field(pipe).sigma


# --- upscaling ------------------------------------------------------------------------------------------------

UPSCALE = {"window": 16, "stride": 8, "num_inference_steps": 6, "output_type": "latent", "progress": False}


def _photo(seed: int, height: int = 24, width: int = 40) -> np.ndarray:
    """A uint8 RGB image (H, W, 3) of uniform noise: every value 0…255 about equally likely."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _as_latents(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → (1, 3, H, W) in [−1, 1], as the pipeline reads an array (÷ 255, then × 2 − 1)."""
    return (torch.from_numpy(array).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0)[None]


def test_upscale_at_strength_0_returns_the_input(pipe):
    """Identity codec, nothing to denoise: the input itself at scale 1, PIL's Lanczos enlargement at scale 2, bit for
    bit; the PIL output rounds back to the input's bytes."""
    photo = _photo(0)
    out = pipe.upscale(photo, scale=1, strength=0.0, generator=torch.Generator().manual_seed(0), **UPSCALE)
    assert torch.equal(out.latents, _as_latents(photo))
    pil = pipe.upscale(photo, scale=1, strength=0.0, **{**UPSCALE, "output_type": "pil"})
    assert np.array_equal(np.asarray(pil.images[0]), photo)

    big = pipe.upscale(photo, scale=2, strength=0.0, generator=torch.Generator().manual_seed(0), **UPSCALE)
    enlarged = np.array(Image.fromarray(photo).resize((80, 48), Image.LANCZOS))
    expected = (torch.from_numpy(enlarged).permute(2, 0, 1).float() / 127.5 - 1.0)[None]
    assert big.latents.shape == (1, 3, 48, 80)
    assert torch.equal(big.latents, expected)


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_2m"])
@pytest.mark.parametrize("scale", [1, 2])
def test_upscale_at_strength_1_ignores_the_input(pipe, scheduler, scale):
    """Strength 1 starts from pure noise with nothing kept: bit-identical to the text-to-image panorama of the same
    seed and size, whatever the image (a multistep scheduler too, whose begin index the image start sets)."""
    runs = [
        pipe.upscale(
            _photo(seed), scale=scale, prompt="sky", strength=1.0, scheduler=scheduler,
            generator=torch.Generator().manual_seed(7), **UPSCALE,
        ).latents
        for seed in (1, 2)
    ]  # fmt: skip
    text = pipe(
        "sky", height=24 * scale, width=40 * scale, scheduler=scheduler, generator=torch.Generator().manual_seed(7),
        **UPSCALE,
    ).latents  # fmt: skip
    assert torch.equal(runs[0], text)
    assert torch.equal(runs[1], text)


# --- inpainting -----------------------------------------------------------------------------------------------

INPAINT_H, INPAINT_W = 40, 72  # odd for the layout: (40 − 32) and (72 − 32) are not multiples of the stride
INPAINT = {"window": 32, "stride": 12, "num_inference_steps": 8, "output_type": "latent", "progress": False}


def _hole() -> torch.Tensor:
    """The inpainting mask (H, W), 1 = redraw: a rectangle and a single column, touching no edge."""
    mask = torch.zeros(INPAINT_H, INPAINT_W)
    mask[14:26, 30:42] = 1.0
    mask[5:35, 60] = 1.0
    return mask


def test_inpaint_layout_covers_every_cell():
    tasks = panorama_tasks(INPAINT_H, INPAINT_W, INPAINT["window"], INPAINT["stride"])
    cover = torch.zeros(INPAINT_H, INPAINT_W)
    for task in tasks:
        v = task.view
        cover[v.top : v.top + v.height, v.left : v.left + v.width] += task.weight
    assert bool((cover > 0).all())
    assert {t.view.top for t in tasks} == {0, 8} and max(t.view.left for t in tasks) == 40  # flush, not on the grid


def _inpaint(pipe, feather: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(result (2, 3, H, W), input (2, 3, H, W)) of inpainting :func:`_hole` with ``feather``."""
    photo = _photo(3, INPAINT_H, INPAINT_W)
    out = pipe.inpaint(
        photo, _hole(), "grass", feather=feather, num_images_per_prompt=2, generator=torch.Generator().manual_seed(0),
        **INPAINT,
    )  # fmt: skip
    return out.latents, _as_latents(photo).expand(2, -1, -1, -1)


def _beyond_the_band(feather: float) -> torch.Tensor:
    """(H, W) bool: kept pixels farther than the blur's reach, round(3σ) px (Chebyshev), from the hole."""
    reach = int(3 * feather + 0.5)
    near = torch.nn.functional.max_pool2d(_hole()[None, None], 2 * reach + 1, stride=1, padding=reach)[0, 0] > 0
    return ~near


def test_inpaint_keeps_the_known_region_exactly_with_feather_0(pipe):
    x, original = _inpaint(pipe, 0.0)
    kept, redrawn = _hole() == 0, _hole() > 0
    assert torch.equal(x[..., kept], original[..., kept])
    assert bool(torch.isfinite(x).all())
    assert float((x[..., redrawn] - original[..., redrawn]).abs().mean()) > 0.1  # the hole is drawn anew


@pytest.mark.float_sensitive
def test_inpaint_feathered_keeps_the_region_beyond_the_band(pipe):
    """Feather 4 px: beyond the blur's reach the input is kept to float rounding (measured 2.4e-7: the feathered
    mask is 1 − 4.8e-7 there, see the xfail below); inside the band the result blends (some pixels change)."""
    x, original = _inpaint(pipe, DEFAULT_FEATHER)
    far = _beyond_the_band(DEFAULT_FEATHER)
    assert float((x[..., far] - original[..., far]).abs().max()) <= 1e-5
    band = ~far & (_hole() == 0)
    assert bool((x[..., band] != original[..., band]).any())
    redrawn = _hole() > 0
    assert float((x[..., redrawn] - original[..., redrawn]).abs().mean()) > 0.1


def test_inpaint_feathered_is_bit_exact_beyond_the_band(pipe):
    x, original = _inpaint(pipe, DEFAULT_FEATHER)
    far = _beyond_the_band(DEFAULT_FEATHER)
    assert torch.equal(x[..., far], original[..., far])
