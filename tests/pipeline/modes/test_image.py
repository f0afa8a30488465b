"""Image inputs: the known-region hook, the feathered latent mask, per-view extra channels, the inverting
scheduler's exactness, the strength rule, layouts with an init_image, and the recorded metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from PIL import Image

from multidiffusion import MultiDiffusionPipeline
from multidiffusion.adapters.model.loaded import first_step_flow, first_step_truncating
from multidiffusion.adapters.schedulers.inversion import InvertingScheduler
from multidiffusion.adapters.schedulers.names import make_scheduler
from multidiffusion.core.engine.guidance import ClassifierFreeGuidance, GuidedCondition
from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.channels import ConcatChannels, crop_window
from multidiffusion.core.features.known import KnownRegion, latent_mask
from multidiffusion.pipeline.inputs.region_file import load_region_file
from multidiffusion.pipeline.modes.image_start import ImageStart

SD_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}


@pytest.fixture(scope="module")
def toy() -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline.from_pretrained("toy")


def run_kwargs(seed: int = 0, steps: int = 8) -> dict:
    return dict(
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        progress=False,
        window=32,
        stride=8,
    )


# --- the feathered latent mask ---------------------------------------------------------------------------------


def test_latent_mask_is_the_area_fraction_without_feathering() -> None:
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., :, :12] = 1.0  # half a cell column is known at 8 px cells
    cells = latent_mask(mask, 8)
    assert cells.shape == (1, 1, 2, 3)
    assert cells[0, 0, 0].tolist() == [1.0, 0.5, 0.0]


def test_feathering_ramps_inward_only() -> None:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1.0
    feathered = latent_mask(mask, 1, feather_px=3.0)
    assert bool((feathered <= mask).all())  # nothing outside the known region is ever treated as known
    # beyond the kernel's reach (3σ + 1 px) inside: kept exactly
    assert torch.equal(feathered[..., :, :22], mask[..., :, :22])
    row = feathered[0, 0, 10, 20:33]
    assert bool((row[1:] <= row[:-1]).all()) and float(row[-1]) == 0.0  # a monotone ramp down to the border


# --- the known-region hook -------------------------------------------------------------------------------------


def test_known_region_is_blended_at_the_next_level_and_exact_at_the_end() -> None:
    scheduler = DDIMScheduler.from_config(SD_CONFIG)
    scheduler.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    known, noise, x = (torch.randn(2, 4, 6, 6, generator=g) for _ in range(3))
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3] = 1.0
    hook = KnownRegion(known[:1], mask, noise)
    out = hook(x, 1, scheduler)
    expected = scheduler.add_noise(known[:1].expand(2, -1, -1, -1), noise, scheduler.timesteps[2].expand(2))
    torch.testing.assert_close(out[..., :3], expected[..., :3], rtol=0, atol=0)
    assert torch.equal(out[..., 3:], x[..., 3:])
    last = hook(x, len(scheduler.timesteps) - 1, scheduler)
    assert torch.equal(last[..., :3], known[:1].expand(2, -1, -1, -1)[..., :3])


# --- extra channels per view -----------------------------------------------------------------------------------


def test_extra_channels_are_the_crop_of_each_rows_view_with_wrap_around() -> None:
    extra = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(1, 2, 6, 8)
    seen: list[torch.Tensor] = []

    def inner(x, t, conds, views=None):
        seen.append(x.clone())
        return x[:, :1]

    views = [View(0, 0, 4, 4), View(2, 6, 4, 4)]  # the second wraps around the right edge
    wrapped = ConcatChannels(inner, extra)
    guided = ClassifierFreeGuidance(wrapped)
    conds = [GuidedCondition("p", "n", 3.0), GuidedCondition("q", None, 1.0)]
    x = torch.zeros(2 * 2, 1, 4, 4)  # two conditions × N = 2 canvases
    guided(x, torch.tensor(1), conds, views=views)
    batch = seen[0]
    assert batch.shape == (6, 3, 4, 4)  # (uncond, cond) × 2 canvases for the first view, 2 for the second
    for row in range(4):
        assert torch.equal(batch[row, 1:], crop_window(extra, views[0])[0])
    cols = [6, 7, 0, 1]
    for row in (4, 5):
        assert torch.equal(batch[row, 1:], extra[0, :, 2:6][:, :, cols])


# --- the inverting scheduler -----------------------------------------------------------------------------------


def oracle(prediction: str, x0: torch.Tensor, eps: torch.Tensor, inverter: InvertingScheduler):
    """A denoiser that knows x₀ and ε: the exact model output at the inverter's current level."""

    def call(x, t, conds, views=None):
        k = inverter._index
        a, b = float(inverter.a[k]), float(inverter.b[k])
        if prediction == "epsilon":
            return eps
        if prediction == "v_prediction":
            return a * eps - b * x0
        if prediction == "sample":
            return x0
        return eps - x0  # flow velocity

    return call


@pytest.mark.parametrize(
    ("prediction", "scheduler_name"),
    [
        ("epsilon", "euler"),
        ("v_prediction", "euler"),
        ("sample", "euler"),
        ("epsilon", "dpmpp_2m"),
        ("flow", "flow_euler"),
        ("flow", "flow_dpmpp_2m"),  # DPM-Solver++ with flow sigmas: has add_noise, yet is flow matching
        ("flow", "flow_unipc"),
    ],
)
@pytest.mark.parametrize("steps", [1, 7])
def test_inversion_is_exact_for_an_exact_model(prediction: str, scheduler_name: str, steps: int) -> None:
    """With the true x₀ and ε the inverted latent is the forward-noised one, a·x₀ + b·ε, in the denoising
    scheduler's own space (for Euler: x₀ + σ ε), for every parameterisation. (A run starts from the clean latent
    as level 0, whose ᾱ is the training table's first, 0.9991 for SD: the same approximation as DDIM inversion's.)"""
    g = torch.Generator().manual_seed(1)
    x0, eps = (
        torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64),
        torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64),
    )
    if prediction == "flow":
        config = {**FlowMatchEulerDiscreteScheduler(shift=3.0).config, "_class_name": "FlowMatchEulerDiscreteScheduler"}
    else:
        config = {**SD_CONFIG, "prediction_type": prediction}
    scheduler = make_scheduler(scheduler_name, config, None)
    scheduler.set_timesteps(10)
    first = first_step_truncating(10, 0.6)
    scheduler.set_begin_index(first)
    target = scheduler.timesteps[first]
    inverter = InvertingScheduler(scheduler, target, steps, config)
    call = oracle(prediction, x0, eps, inverter)
    x = float(inverter.a[0]) * x0 + float(inverter.b[0]) * eps  # level 0: ᾱ of t = 0 (σ = 0 for flow: x₀ itself)
    for t in inverter.timesteps:
        x = inverter.step(call(x, t, None), t, x).prev_sample
    expected = add_noise(scheduler, x0, eps, target[None])  # the scheduler's own noising (scale_noise for FlowMatch)
    torch.testing.assert_close(inverter.to_scheduler(x), expected.double(), rtol=1e-5, atol=1e-5)


def test_first_steps_are_the_families_img2img_rules() -> None:
    strengths = (0.0, 0.3, 0.5, 0.99, 1.0)
    assert [first_step_truncating(50, s) for s in strengths] == [50, 35, 25, 1, 0]
    assert [first_step_flow(50, s) for s in strengths] == [50, 35, 25, 0, 0]
    assert (first_step_truncating(4, 0.6), first_step_flow(4, 0.6)) == (2, 1)  # 2.4 steps: SD runs 2, SD 3 runs 3


# --- whole runs on the toy model -------------------------------------------------------------------------------


def test_strength_zero_is_the_encoded_image_at_an_odd_size(toy: MultiDiffusionPipeline) -> None:
    image = torch.rand(3, 37, 53)  # not a multiple of the 32-px window or the 8-px stride
    out = toy.upscale(image, scale=1, strength=0.0, **run_kwargs())
    assert out.images.shape == (1, 3, 37, 53)
    torch.testing.assert_close(out.images[0], image, rtol=0, atol=1e-6)


def test_strength_one_ignores_the_image(toy: MultiDiffusionPipeline) -> None:
    out = toy.upscale(torch.rand(3, 24, 40), scale=2, prompt="red", strength=1.0, **run_kwargs(3))
    plain = toy("red", height=48, width=80, **run_kwargs(3))
    assert torch.equal(out.images, plain.images)


def test_noise_inversion_keeps_more_of_the_image(toy: MultiDiffusionPipeline) -> None:
    """At strength 0.8 the inverted start keeps the input's structure far better than fresh noise."""
    field = toy.model.components["field"]
    g = torch.Generator().manual_seed(5)
    image = (field.sample(1, 48, 48, mean=torch.tensor([0.0, 0.0, 0.0]), generator=g)[0] + 1) / 2
    errors = {}
    for steps in (0, 20):
        out = toy.upscale(
            image.clamp(0, 1), scale=1, prompt="grey", strength=0.8, noise_inversion_steps=steps, **run_kwargs(1, 20)
        )
        errors[steps] = float((out.images[0] - image.clamp(0, 1)).pow(2).mean().sqrt())
    assert errors[20] < 0.5 * errors[0], errors


def test_metadata_records_the_image_and_reproduce_refuses_it(toy: MultiDiffusionPipeline, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    Image.fromarray(np.full((16, 24, 3), 100, np.uint8)).save(path)
    out = toy.upscale(str(path), scale=2, strength=0.5, **run_kwargs())
    record = json.loads(out.metadata.to_json())
    assert record["mode"] == "upscale"
    assert record["image"]["input"]["name"] == "in.png"
    assert len(record["image"]["input"]["sha256"]) == 64
    assert record["image"]["strength"] == 0.5 and record["height"] == 32 and record["width"] == 48
    assert "Denoising strength: 0.5" in out.metadata.to_a1111()
    with pytest.raises(InvalidInputError, match=r"in\.png"):
        toy.reproduce(record)


def test_outpaint_keeps_the_image_and_joins_a_circular_canvas(toy: MultiDiffusionPipeline) -> None:
    image = torch.rand(3, 32, 32)
    out = toy.outpaint(image, "blue", left=16, right=24, feather=0.0, circular=True, **run_kwargs())
    assert out.images.shape == (1, 3, 32, 72)
    torch.testing.assert_close(out.images[0, :, :, 16:48], image, rtol=0, atol=1e-6)
    assert out.metadata.settings.views.wrap == (False, True)


def test_layout_init_image_keeps_it_under_region_prompts(toy: MultiDiffusionPipeline, tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    layout = {
        "width": 96,
        "height": 40,
        "background": "green",
        "regions": [{"prompt": "red", "box": [64, 0, 96, 40]}],
        "init_image": {"path": "photo.png", "left": 8, "top": 8, "feather": 0},
    }
    (tmp_path / "layout.json").write_text(json.dumps(layout))
    parsed = load_region_file(tmp_path / "layout.json")
    assert isinstance(parsed.image, ImageStart) and parsed.image.size == (40, 96)
    out = toy.regions(parsed.regions, parsed.background, height=40, width=96, image=parsed.image, **run_kwargs())
    kept = out.images[0, :, 8:32, 8:40]
    torch.testing.assert_close(kept, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, rtol=0, atol=1e-6)
    record = json.loads(out.metadata.to_json())
    assert record["mode"] == "regions" and record["image"]["mode"] == "init_image"


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ({"path": "missing.png"}, "cannot read init_image image"),
        ({"path": "photo.png", "left": 80}, "past the 96×40 px canvas"),
        ({"path": "photo.png", "strength": 2}, "strength must be in"),
        ({"path": "photo.png", "zoom": 2}, "unknown key init_image.zoom"),
        (7, "init_image must be an image path"),
    ],
)
def test_layout_init_image_errors(tmp_path: Path, init: object, message: str) -> None:
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "layout.json").write_text(
        json.dumps({"width": 96, "height": 40, "background": "x", "init_image": init})
    )
    with pytest.raises(InvalidInputError, match=message):
        load_region_file(tmp_path / "layout.json")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.upscale(torch.rand(3, 8, 8), scale=0), "scale must be in"),
        (lambda p: p.upscale(torch.rand(3, 8, 8), scale=float("nan")), "scale must be in"),
        (lambda p: p.upscale(torch.rand(3, 8, 8), strength=1.5), "strength must be in"),
        (lambda p: p.upscale(torch.rand(3, 8, 8), noise_inversion_steps=-1), "noise inversion steps"),
        (lambda p: p.upscale(torch.rand(3, 8, 8), resample="magic"), "unknown resampling"),
        (lambda p: p.upscale(torch.rand(3, 8, 8) * 2), "values in \\[0, 1\\]"),
        (lambda p: p.inpaint(torch.rand(3, 8, 8), torch.zeros(8, 9), "x"), "9×8 px but the image is 8×8"),
        (lambda p: p.outpaint(torch.rand(3, 8, 8), "x"), "at least one margin"),
        (lambda p: p.outpaint(torch.rand(3, 8, 8), "x", left=-8), "margin must be a whole number"),
        (lambda p: p(["x"], height=8, width=8, image=ImageStart(torch.zeros(1, 3, 8, 16))), "canvas is 8×8"),
        (lambda p: p.upscale(torch.rand(3, 8, 8), checkpoint="x.ckpt"), "cannot be checkpointed or resumed yet"),
    ],
)
def test_bad_image_arguments_are_one_line(toy: MultiDiffusionPipeline, call, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call(toy)


def test_a_16_bit_mask_is_scaled_not_clipped(toy: MultiDiffusionPipeline, tmp_path: Path) -> None:
    """PIL's convert clips 16-bit greyscale; masks and images are scaled to 8 bits instead (65535 → 255)."""
    values = np.zeros((16, 24), np.uint16)
    values[:, 12:] = 65535
    values[:, 8:12] = 32768
    Image.fromarray(values).save(tmp_path / "mask16.png")
    start = toy.plan_inpaint(torch.rand(3, 16, 24), str(tmp_path / "mask16.png"), feather=0.0)
    redraw = 1 - start.known[0, 0, 0]
    assert redraw[:8].tolist() == [0.0] * 8 and redraw[12:].tolist() == [1.0] * 12
    torch.testing.assert_close(redraw[8:12], torch.full((4,), 128 / 255), rtol=0, atol=1e-6)
    with pytest.raises(InvalidInputError, match="all black"):
        toy.plan_inpaint(torch.rand(3, 16, 24), np.zeros((16, 24), np.uint8))


@pytest.mark.parametrize(("scheduler", "expected"), [("ddim", (0, 3, 6)), ("heun", (0, 5, 11))])
def test_steps_run_counts_only_the_steps_an_image_start_takes(toy: MultiDiffusionPipeline, scheduler, expected) -> None:
    """Heun's timesteps come doubled (11 for 6 steps); an image start skips first_step · order of them, as
    diffusers' img2img does."""
    calls: list[int] = []

    def count(state):
        calls.append(state.step_index)

    image = torch.rand(3, 16, 16)
    for strength, steps in zip((0.0, 0.5, 1.0), expected, strict=True):
        calls.clear()
        kwargs = {**run_kwargs(steps=6), "window": 16, "stride": 8}
        out = toy.upscale(image, scale=1, strength=strength, scheduler=scheduler, callback_on_step_end=count, **kwargs)
        assert out.steps_run == steps == len(calls)
