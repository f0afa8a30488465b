"""The global view (docs/fusion.md): its closed form, its exact oracle, its noise level, and what it does to a run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multidiffusion.adapters.families.toy import load as load_toy
from multidiffusion.adapters.schedulers.names import make_scheduler
from multidiffusion.core.engine.foresee import foresee_x0, output_from_x0, step_level
from multidiffusion.core.engine.fusion import FusionPlan
from multidiffusion.core.engine.guidance import ClassifierFreeGuidance, GuidedCondition
from multidiffusion.core.engine.sampling import sample
from multidiffusion.core.engine.tasks import panorama_tasks
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import GlobalStep, GlobalView, pooling_factor
from multidiffusion.core.oracle.field import GaussianField, pooled_field, se_kernel
from multidiffusion.core.oracle.stats import column_variance, neighbour_correlation

HARD = "toy:ell=8,sigma=0.3,long=64,rho=0.3"


def _pooling_matrix(rows: int, cols: int, k: int) -> torch.Tensor:
    """P: (rows/k · cols/k, rows · cols), the mean of each k × k block, row-major."""
    pool_rows = torch.kron(torch.eye(rows // k, dtype=torch.float64), torch.full((1, k), 1.0 / k, dtype=torch.float64))
    pool_cols = torch.kron(torch.eye(cols // k, dtype=torch.float64), torch.full((1, k), 1.0 / k, dtype=torch.float64))
    return torch.kron(pool_rows, pool_cols)


@pytest.mark.parametrize("weights", ["uniform", "gaussian"])
@pytest.mark.parametrize("omega", [0.3, 4.0])
def test_the_closed_form_is_the_least_squares_solution(weights, omega):
    """Eq. 4 with F_g = P: the Sherman–Morrison form equals a dense solve of the normal equations."""
    height, width, window, k = 8, 24, 8, 4
    plan = FusionPlan(panorama_tasks(height, width, window, 4, weights=weights), height, width, "cpu")
    denom = plan.denominator.double()
    gen = torch.Generator().manual_seed(0)
    j0 = torch.randn(1, 1, height, width, generator=gen, dtype=torch.float64)
    g = torch.randn(1, 1, height // k, width // k, generator=gen, dtype=torch.float64)
    d = denom.reshape(-1)
    pool = _pooling_matrix(height, width, k)
    lam = omega * d.mean() * k * k  # the module's λ = ω D̄ k²
    normal = torch.diag(d) + lam * pool.T @ pool
    expected = torch.linalg.solve(normal, d * j0.reshape(-1) + lam * pool.T @ g.reshape(-1)).reshape(j0.shape)
    step = GlobalStep(GlobalView(omega, factor=k), height, width, (window, window), denom)
    m = (F.avg_pool2d(j0, k) + step.c * g) / (1 + step.c)
    got = j0 - step.scale * F.interpolate(m - g, scale_factor=k, mode="nearest")
    assert torch.allclose(got, expected, rtol=0, atol=1e-12 * float(expected.abs().max()))


def test_the_pooled_field_is_the_exact_prior_of_block_means():
    field = GaussianField(3.0, 0.3, 12.0, 0.3)
    k, n = 4, 6
    pooled = pooled_field(field, k)
    fine = se_kernel(n * k, 3.0, 12.0, 0.3)
    pool = torch.kron(torch.eye(n, dtype=torch.float64), torch.full((1, k), 1.0 / k, dtype=torch.float64))
    assert torch.allclose(pooled.covariance(n, n), 0.09 * torch.kron(pool @ fine @ pool.T, pool @ fine @ pool.T))
    assert pooled_field(field, 1) is field


def test_the_toy_denoiser_is_exact_for_a_view_of_the_whole_canvas():
    """Latents smaller than their view by k: the posterior of the pooled field, checked against a dense solve."""
    model = load_toy("toy:ell=3,sigma=0.3", device=torch.device("cpu"))
    field = model.components["field"]
    k, h, w = 4, 2, 5
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, h, w, generator=gen, dtype=torch.float64)
    mean = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    t = torch.tensor(500)
    alpha, s = model.denoiser.levels(t, 1)
    eps = model.denoiser(x, t, [mean], views=[View(0, 0, h * k, w * k)])
    sigma = pooled_field(field, k).covariance(h, w)
    cov = float(alpha) ** 2 * sigma + float(s) ** 2 * torch.eye(h * w, dtype=torch.float64)
    for c in range(3):
        centred = x[0, c].reshape(-1) - float(alpha) * mean[0, c]
        expected = float(s) * torch.linalg.solve(cov, centred)
        assert torch.allclose(eps[0, c].reshape(-1), expected, atol=1e-10)
    with pytest.raises(ValueError, match="cannot give latents"):
        model.denoiser(x, t, [mean], views=[View(0, 0, h * k, w * k + 1)])


@pytest.mark.parametrize(
    "name, prediction",
    [("ddim", "epsilon"), ("ddim", "v_prediction"), ("euler", "epsilon"), ("dpmpp_2m_karras", "sample")],
)
def test_output_from_x0_inverts_foresee_x0(name, prediction):
    config = {**load_toy("toy", device=torch.device("cpu")).scheduler_config, "prediction_type": prediction}
    sched = make_scheduler(name, config)
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    if hasattr(sched, "_init_step_index"):
        sched._init_step_index(t)
    gen = torch.Generator().manual_seed(2)
    x, o = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    back = output_from_x0(sched, foresee_x0(sched, o, x, t), x, t)
    assert torch.allclose(back, o, atol=1e-4 * float(o.abs().max()))


def test_flow_matching_inverts_and_reads_its_sigma():
    import diffusers

    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(8)
    t = sched.timesteps[2]
    sched._init_step_index(t)
    gen = torch.Generator().manual_seed(3)
    x, o = torch.randn(1, 4, 4, 4, generator=gen), torch.randn(1, 4, 4, 4, generator=gen)
    assert step_level(sched, t) == pytest.approx(
        ("flow_prediction", 1 - float(sched.sigmas[2]), float(sched.sigmas[2]), 1.0)
    )
    assert torch.allclose(output_from_x0(sched, foresee_x0(sched, o, x, t), x, t), o, atol=1e-5)


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp_2m_karras"])
def test_without_pooling_the_level_is_the_steps_own(name):
    """k = 1: the pooled canvas is the canvas; its level and timestep are the scheduler's."""
    model = load_toy("toy", device=torch.device("cpu"))
    sched = make_scheduler(name, model.scheduler_config)
    sched.set_timesteps(20)
    t = sched.timesteps[5]
    if hasattr(sched, "_init_step_index"):
        sched._init_step_index(t)
    plan = FusionPlan(panorama_tasks(8, 8, 8, 8), 8, 8, "cpu")
    step = GlobalStep(GlobalView(1.0, factor=1), 8, 8, (8, 8), plan.denominator)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * float(sched.init_noise_sigma)
    model_input, level = step.model_input(x, sched, t)
    alpha, s = model.denoiser.levels(level.timestep, 1)
    assert float(level.timestep) == pytest.approx(float(t), abs=0.5)  # Karras schedules round t, not σ
    assert level.signal == pytest.approx(float(alpha), rel=1e-4)
    assert level.noise == pytest.approx(float(s), rel=1e-4)
    scaled = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
    assert torch.allclose(model_input, scaled, rtol=1e-4)


def test_pooling_divides_the_noise_level():
    """P x_t of x_t = α x₀ + s ε has noise s/k: the level the global view is denoised at (σ' = σ / k)."""
    model = load_toy("toy", device=torch.device("cpu"))
    sched = make_scheduler("ddim", model.scheduler_config)
    sched.set_timesteps(20)
    t = sched.timesteps[4]
    plan = FusionPlan(panorama_tasks(16, 64, 16, 8), 16, 64, "cpu")
    step = GlobalStep(GlobalView(1.0), 16, 64, (16, 16), plan.denominator)
    assert step.factor == 4
    abar = float(sched.alphas_cumprod[int(t)])
    sigma = math.sqrt(1 / abar - 1) / 4
    _, level = step.model_input(torch.zeros(1, 3, 16, 64), sched, t)
    assert level.noise / level.signal == pytest.approx(sigma, rel=1e-9)
    alpha, s = model.denoiser.levels(level.timestep, 1)
    assert float(s / alpha) == pytest.approx(sigma, rel=1e-3)  # the timestep names that level


@pytest.mark.parametrize(
    "size, window, factor, expected",
    [
        ((16, 128), (16, 16), None, 8),
        ((64, 64), (64, 64), None, 1),
        ((64, 96), (32, 32), None, 4),
        ((32, 96), (16, 16), 8, 8),
    ],
)
def test_the_pooling_factor(size, window, factor, expected):
    assert pooling_factor(*size, window, factor) == expected


@pytest.mark.parametrize(
    "size, window, factor, message",
    [
        ((32, 97), (32, 32), None, "no pooling factor"),
        ((32, 96), (16, 16), 2, "must divide"),
        ((32, 96), (16, 16), 5, "must divide"),
    ],
)
def test_an_impossible_pooling_is_refused(size, window, factor, message):
    with pytest.raises(InvalidInputError, match=message):
        pooling_factor(*size, window, factor)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight": 0.0}, "weight must be"),
        ({"weight": math.nan}, "weight must be"),
        ({"until": 0.0}, "until"),
        ({"until": 1.5}, "until"),
        ({"factor": 0}, "factor"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        GlobalView(**kwargs)


def test_until_counts_the_first_steps():
    assert [GlobalView(until=0.3).active(i, 10) for i in range(10)] == [True] * 3 + [False] * 7
    assert all(GlobalView(until=1.0).active(i, 7) for i in range(7))


def _canvases(global_view, samples=24, steps=20, seed=0):
    model = load_toy(HARD, device=torch.device("cpu"))
    sched = make_scheduler("dpmpp_2m_karras", model.scheduler_config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(samples, 3, 16, 128, generator=gen)
    cond = GuidedCondition(positive=model.encode_prompts([""] * samples))
    tasks = panorama_tasks(16, 128, 16, 4)
    return sample(
        ClassifierFreeGuidance(model.denoiser), sched, x_T, tasks, [cond], generator=gen, global_view=global_view
    )


def test_on_the_harder_oracle_the_global_view_restores_long_range_correlation_and_variance():
    """Same seeds, with and without: the figures docs/fusion.md reports, on a smaller run."""
    plain, glob = _canvases(None), _canvases(GlobalView(4.0, 1.0))
    field = GaussianField(8.0, 0.3, 64.0, 0.3)
    corr = [float(neighbour_correlation(x, lag=32).mean()) for x in (plain, glob)]
    var = [float(column_variance(x).mean()) / field.variance for x in (plain, glob)]
    assert abs(corr[0]) < 0.08  # two windows apart, plain MultiDiffusion keeps no correlation (the field has 0.26)
    assert corr[1] > corr[0] + 0.08
    assert var[1] > var[0] + 0.05


def test_a_global_view_with_a_bad_condition_fails_before_any_model_call():
    model = load_toy("toy", device=torch.device("cpu"))
    sched = make_scheduler("ddim", model.scheduler_config)
    sched.set_timesteps(2)
    calls = []

    def denoiser(x, t, conds, views=None):
        calls.append(x.shape)
        return torch.zeros_like(x)

    cond = GuidedCondition(positive=model.encode_prompts(["sky"]))
    with pytest.raises(InvalidInputError, match="global view condition 1"):
        sample(
            denoiser,
            sched,
            torch.zeros(1, 3, 16, 64),
            panorama_tasks(16, 64, 16, 8),
            [cond],
            global_view=GlobalView(condition=1),
        )
    with pytest.raises(InvalidInputError, match="no pooling factor"):
        sample(
            denoiser, sched, torch.zeros(1, 3, 16, 67), panorama_tasks(16, 67, 16, 8), [cond], global_view=GlobalView()
        )
    assert not calls


def test_the_pipeline_records_and_reproduces_a_global_view(small_pipe):
    """Tiny SD: the UNet denoises the pooled canvas; the run records the setting and its reproduction is exact."""
    from multidiffusion.pipeline.settings.reproduce import call_arguments

    args = dict(height=128, width=512, num_inference_steps=3, output_type="latent", progress=False)
    out = small_pipe("a red sky", generator=torch.Generator().manual_seed(5), global_view=2.0, **args)
    plain = small_pipe("a red sky", generator=torch.Generator().manual_seed(5), **args)
    assert out.metadata.settings.global_view == GlobalView(2.0, until=1.0)
    assert "Global view: weight 2, until 1" in out.metadata.to_a1111()
    assert torch.isfinite(out.latents).all()
    assert not torch.allclose(out.latents, plain.latents)
    method, kwargs = call_arguments(out.metadata.to_dict())
    assert method == "panorama" and kwargs["global_view"] == GlobalView(2.0)
    kwargs.update(output_type="latent", progress=False)
    again = small_pipe(**kwargs)
    assert torch.equal(again.latents, out.latents)


def test_the_pipeline_refuses_what_a_global_view_cannot_do(small_pipe):
    from multidiffusion.pipeline.customise.control_spec import ControlSpec
    from multidiffusion.pipeline.customise.customisation import Customisation

    args = dict(num_inference_steps=1, output_type="latent", progress=False)
    with pytest.raises(InvalidInputError, match="no pooling factor"):
        small_pipe("sky", height=128, width=136, global_view=1.0, **args)
    with pytest.raises(InvalidInputError, match="until"):
        small_pipe("sky", height=128, width=512, global_view=1.0, global_view_until=0.0, **args)
    custom = Customisation(control=(ControlSpec("some/controlnet", None),))
    with pytest.raises(InvalidInputError, match="cannot be combined with control"):
        small_pipe("sky", height=128, width=512, global_view=1.0, customise=custom, **args)


def test_an_outpaint_keeps_its_picture_with_a_global_view():
    """The image methods pass the global view through: the known pixels stay, the recipe records it."""
    from PIL import Image

    from multidiffusion.pipeline import MultiDiffusionPipeline

    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    picture = Image.new("RGB", (64, 32), (200, 40, 40))
    out = pipe.outpaint(
        picture,
        "green grass",
        left=32,
        right=32,
        num_inference_steps=6,
        generator=torch.Generator().manual_seed(0),
        global_view=4.0,
        output_type="np",
        progress=False,
    )
    assert out.metadata.settings.global_view.weight == 4.0 and out.metadata.mode == "outpaint"
    kept = out.images[0][:, 40:88].astype(float)
    assert abs(kept[..., 0].mean() - 200 / 255) < 0.05 and abs(kept[..., 1].mean() - 40 / 255) < 0.05
