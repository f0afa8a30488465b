"""Image inputs against diffusers' own image pipelines on tiny random components: one view of ``pipe.upscale`` (scale 1)
≡ the family's img2img pipeline (SD 1.x, SDXL, SD 3, Flux), one view of ``pipe.inpaint`` ≡
``StableDiffusionInpaintPipeline`` with a 4-channel UNet (known-region blending) and with a 9-channel inpainting UNet
(mask and masked-image latents as extra input channels), and a 2 × 2-view canvas of the 9-channel model ≡ the
per-view reference with each view's crop of those channels.

Our codec encodes with the posterior mean; diffusers samples the posterior with the generator. The fixture
``argmax_encoding`` makes diffusers' pipelines take the mean too (``retrieve_latents(..., sample_mode="argmax")``,
diffusers' own option), so both encode the same pixels to the same latents and the generator draws only the noise
(and a stochastic scheduler's step noise): the generators' final states are compared as well.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.functional import pixel_shuffle

from multidiffusion.adapters import make_scheduler
from multidiffusion.adapters.codecs.packed import tokens
from multidiffusion.adapters.families.sd import from_components as sd_from_components
from multidiffusion.core import layout_views, view_weights
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.modes.image_start import inpaint_channels, read_image, read_known
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.reference_impl import per_view_stepped

PROMPT = "a photo of the dolomites"
NEGATIVE = "blurry"
SHORT_PROMPT = "a red fox"  # the tiny Flux T5 reads 16 tokens (tiny_flux.T5_MAX_LENGTH)
# Relative to max|expected| (tests/helpers/numerics.py). One view of our image start vs diffusers' image pipelines: the
# same
# operations on the same inputs, ours with both guidance halves in one batch (core.engine.guidance). Worst measured on
# AVX-512
# and AVX2 kernels: SD img2img 3.0e-6 (latents |x| ≈ 2.4–7), decoded 2.0e-6, SDXL 1.1e-6, SD 3 1.0e-6, Flux 1.9e-7,
# 4-channel inpaint 1.7e-6, 9-channel inpaint 2.2e-6 (|x| up to 55 with Euler at strength 1). 1e-4 leaves 30×.
REL_PIPELINE = 1e-4
# A 2 × 2-view canvas vs the per-view reference (views stepped alone, then averaged; DDIM's step is linear):
# worst measured 1.7e-6.
REL_REFERENCE = 2e-5
# The same pixels encoded by the same VAE, in different memory layouts (diffusers' preprocessed image is channels-last;
# ours, read_image's permuted array with a batch axis added, is taken as NCHW), so the convolutions take different
# kernel paths and round differently: measured 7.2e-6 of the masked-image latents' magnitude (both CPU paths).
REL_ENCODE = 1e-4

PIPELINE_MODULES = (
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint",
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img",
    "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img",
    "diffusers.pipelines.flux.pipeline_flux_img2img",
)


@pytest.fixture
def argmax_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' image pipelines encode with the posterior mean (``sample_mode="argmax"``), as our codec does."""
    import importlib

    for name in PIPELINE_MODULES:
        module = importlib.import_module(name)
        original = module.retrieve_latents

        def mean(encoder_output: Any, generator: Any = None, sample_mode: str = "sample", _orig: Any = original) -> Any:
            return _orig(encoder_output, generator, sample_mode="argmax")

        monkeypatch.setattr(module, "retrieve_latents", mean)


def _seed(n: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(n)


def _picture(height: int, width: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB picture (uint8): low-frequency noise upsampled, so the VAE sees structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


def _block_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> Image.Image:
    """White (repaint) on [top, bottom) × [left, right) px, black elsewhere."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = 255
    return Image.fromarray(mask, mode="L")


def _soft_mask(height: int, width: int) -> Image.Image:
    """A grey-ramped, non-cell-aligned mask: binarisation at 0.5 and nearest-cell sampling decide every cell."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = np.hypot(y - 0.43 * height, x - 0.57 * width) / (0.3 * min(height, width))
    return Image.fromarray(np.clip(255 * (1.6 - r), 0, 255).astype(np.uint8), mode="L")


def _same_draws(ours: torch.Generator, theirs: torch.Generator) -> None:
    """Both generators drew the same numbers in total (the noise, and any stochastic step noise)."""
    assert torch.equal(ours.get_state(), theirs.get_state()), "the generators drew different amounts"


# --- SD 1.x img2img ------------------------------------------------------------------------------------------------


def _sd_components(small: dict[str, Any], scheduler: str, **changes: Any) -> dict[str, Any]:
    return {**small, "scheduler": make_scheduler(scheduler, small["scheduler"].config), **changes}


def _sd_pipeline(cls: Any, components: dict[str, Any]) -> Any:
    pipe = cls(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.float_sensitive
@pytest.mark.parametrize(
    ("scheduler", "steps", "strength"),
    [("ddim", 5, 0.6), ("ddim", 4, 0.7), ("euler", 5, 0.6), ("dpmpp_2m", 5, 0.6), ("euler_a", 5, 0.6)],
)
def test_sd_upscale_one_view_matches_img2img(
    small, small_pipe, argmax_encoding, one_thread, scheduler, steps, strength
):
    """``upscale(scale=1)`` on a 64 px canvas with the window = the canvas ≡ StableDiffusionImg2ImgPipeline: the same
    truncated timesteps (steps − int(steps · strength); 4 · 0.7 = 2.8 → 2 steps run), the same begin index for the
    stateful Euler and DPM-Solver++ (set_begin_index), the same noise, and for Euler ancestral the same step noise."""
    from diffusers import StableDiffusionImg2ImgPipeline

    image = _picture(64, 64)
    ref = _sd_pipeline(StableDiffusionImg2ImgPipeline, _sd_components(small, scheduler))
    g_ref, g_ours = _seed(), _seed()
    expected = ref(
        PROMPT,
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=7.5,
        negative_prompt=NEGATIVE,
        generator=g_ref,
        output_type="latent",
    ).images
    out = small_pipe.upscale(
        image,
        scale=1,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=7.5,
        scheduler=scheduler,
        window=64,
        generator=g_ours,
        output_type="latent",
        progress=False,
    )
    assert out.latents.shape == expected.shape == (1, 4, 8, 8)
    assert out.steps_run == int(steps * strength) and out.metadata.mode == "upscale"  # the steps the strength takes
    assert expected.abs().max() > 0.5  # not trivially small
    _same_draws(g_ours, g_ref)
    assert_close_scaled(out.latents, expected, rel=REL_PIPELINE, what=f"SD img2img {scheduler} {steps}×{strength}")


@pytest.mark.float_sensitive
def test_sd_upscale_decoded_image_matches_img2img(small, small_pipe, argmax_encoding, one_thread):
    """The same comparison end to end: decoded images as NumPy arrays in [0, 1]."""
    from diffusers import StableDiffusionImg2ImgPipeline

    image = _picture(64, 64, seed=1)
    ref = _sd_pipeline(StableDiffusionImg2ImgPipeline, _sd_components(small, "ddim"))
    args = dict(strength=0.6, num_inference_steps=5, guidance_scale=7.5, negative_prompt=NEGATIVE, output_type="np")
    expected = ref(PROMPT, image=image, generator=_seed(), **args).images
    ours = small_pipe.upscale(
        image, scale=1, prompt=PROMPT, scheduler="ddim", window=64, generator=_seed(), progress=False, **args
    ).images
    assert ours.shape == expected.shape == (1, 64, 64, 3)
    assert_close_scaled(ours, expected, rel=REL_PIPELINE, what="SD img2img decoded", scale=1.0)


# --- SDXL img2img --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.helpers.tiny_sdxl import make_sdxl_components

    return make_sdxl_components(tmp_path_factory.mktemp("tiny-sdxl-img"))


@pytest.fixture(scope="module")
def sdxl_pipe(sdxl: dict[str, Any]) -> MultiDiffusionPipeline:
    from multidiffusion.adapters.families.sdxl import from_components

    c = sdxl
    return MultiDiffusionPipeline(
        from_components(
            "tiny-sdxl",
            c["unet"],
            c["vae"],
            c["text_encoder"],
            c["tokenizer"],
            c["text_encoder_2"],
            c["tokenizer_2"],
            c["scheduler"].config,
            crop_coords="zero",
        )
    )


@pytest.mark.float_sensitive
@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "ddim"])
def test_sdxl_upscale_one_view_matches_img2img(sdxl, sdxl_pipe, argmax_encoding, one_thread, scheduler):
    """≡ StableDiffusionXLImg2ImgPipeline at its defaults: ``requires_aesthetics_score`` False (the time ids are
    original size, crop (0, 0), target size — ours: the view's size and crop (0, 0), the same at one view),
    ``denoising_start`` None (the strength decides the first step)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    image = _picture(64, 64, seed=2)
    components = {**sdxl, "scheduler": make_scheduler(scheduler, sdxl["scheduler"].config)}
    ref = StableDiffusionXLImg2ImgPipeline(**components, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    assert not ref.config.requires_aesthetics_score
    g_ref, g_ours = _seed(), _seed()
    expected = ref(
        PROMPT,
        image=image,
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=5.0,
        generator=g_ref,
        output_type="latent",
    ).images
    out = sdxl_pipe.upscale(
        image,
        scale=1,
        prompt=PROMPT,
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=5.0,
        scheduler=scheduler,
        window=64,
        generator=g_ours,
        output_type="latent",
        progress=False,
    )
    assert out.latents.shape == expected.shape == (1, 4, 8, 8) and out.steps_run == 3
    assert expected.abs().max() > 0.5
    _same_draws(g_ours, g_ref)
    assert_close_scaled(out.latents, expected, rel=REL_PIPELINE, what=f"SDXL img2img {scheduler}")


# --- SD 3 img2img --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.helpers.tiny_sd3 import make_sd3_components

    return make_sd3_components(tmp_path_factory.mktemp("tiny-sd3-img"))


@pytest.fixture(scope="module")
def sd3_pipe(sd3: dict[str, Any]) -> MultiDiffusionPipeline:
    from multidiffusion.adapters.families.sd3 import from_components, named_config

    c = sd3
    return MultiDiffusionPipeline(
        from_components(
            "tiny-sd3",
            c["transformer"],
            c["vae"],
            c["text_encoder"],
            c["tokenizer"],
            c["text_encoder_2"],
            c["tokenizer_2"],
            c["text_encoder_3"],
            c["tokenizer_3"],
            named_config(c["scheduler"]),
        )
    )


def _sd3_pair(sd3, sd3_pipe, steps: int, strength: float) -> tuple[Any, torch.Tensor, torch.Generator, torch.Generator]:
    from diffusers import StableDiffusion3Img2ImgPipeline

    image = _picture(128, 128, seed=3)
    ref = StableDiffusion3Img2ImgPipeline(**sd3)
    ref.set_progress_bar_config(disable=True)
    g_ref, g_ours = _seed(), _seed()
    expected = ref(
        PROMPT,
        image=image,
        height=128,
        width=128,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=7.0,
        generator=g_ref,
        output_type="latent",
    ).images
    out = sd3_pipe.upscale(
        image,
        scale=1,
        prompt=PROMPT,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=7.0,
        window=128,
        generator=g_ours,
        output_type="latent",
        progress=False,
    )
    return out, expected, g_ours, g_ref


@pytest.mark.float_sensitive
def test_sd3_upscale_one_view_matches_img2img(sd3, sd3_pipe, argmax_encoding, one_thread):
    """≡ StableDiffusion3Img2ImgPipeline (flow matching: the start is (1 − σ) x₀ + σ ε, scale_noise) where
    steps · strength is a whole number (5 · 0.6 = 3), on which both rules for the first step agree."""
    out, expected, g_ours, g_ref = _sd3_pair(sd3, sd3_pipe, 5, 0.6)
    assert out.latents.shape == (1, 64, 8, 8) and expected.shape == (1, 16, 16, 16) and out.steps_run == 3
    assert expected.abs().max() > 0.5
    _same_draws(g_ours, g_ref)
    assert_close_scaled(pixel_shuffle(out.latents, 2), expected, rel=REL_PIPELINE, what="SD3 img2img")


# --- Flux img2img --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux_dev(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.helpers.tiny_flux import make_flux_components

    return make_flux_components(tmp_path_factory.mktemp("tiny-flux-img"), guidance_embeds=True)


@pytest.fixture(scope="module")
def flux_pipe(flux_dev: dict[str, Any]) -> MultiDiffusionPipeline:
    from tests.helpers.tiny_flux import loaded_flux

    return MultiDiffusionPipeline(loaded_flux(flux_dev))


def _flux_pair(flux_dev, flux_pipe, steps: int, strength: float):
    from diffusers import FluxImg2ImgPipeline

    from tests.helpers.tiny_flux import T5_MAX_LENGTH

    image = _picture(128, 128, seed=4)
    ref = FluxImg2ImgPipeline(**flux_dev)
    ref.set_progress_bar_config(disable=True)
    g_ref, g_ours = _seed(), _seed()
    expected = ref(
        SHORT_PROMPT,
        image=image,
        height=128,
        width=128,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=3.5,
        generator=g_ref,
        output_type="latent",
        max_sequence_length=T5_MAX_LENGTH,
    ).images
    out = flux_pipe.upscale(
        image,
        scale=1,
        prompt=SHORT_PROMPT,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=3.5,
        window=128,
        generator=g_ours,
        output_type="latent",
        progress=False,
    )
    return out, expected, g_ours, g_ref


@pytest.mark.float_sensitive
def test_flux_upscale_one_view_matches_img2img(flux_dev, flux_pipe, argmax_encoding, one_thread):
    """≡ FluxImg2ImgPipeline (dev-style: embedded guidance, dynamic shift μ from the view's tokens) where steps ·
    strength is a whole number (5 · 0.6 = 3)."""
    out, expected, g_ours, g_ref = _flux_pair(flux_dev, flux_pipe, 5, 0.6)
    assert out.latents.shape == (1, 64, 8, 8) and expected.shape == (1, 64, 64) and out.steps_run == 3
    assert expected.abs().max() > 0.5
    _same_draws(g_ours, g_ref)
    assert_close_scaled(tokens(out.latents), expected, rel=REL_PIPELINE, what="Flux img2img")


@pytest.mark.float_sensitive
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_img2img_first_step_when_steps_times_strength_is_fractional(
    sd3, sd3_pipe, flux_dev, flux_pipe, argmax_encoding, one_thread, family
):
    """SD 3's and Flux's img2img pipelines round steps · strength up (4 × 0.6: 3 steps, from step 1), SD's down;
    each family's model says which (``LoadedModel.first_step``), so both match at a fractional product."""
    pair = _sd3_pair(sd3, sd3_pipe, 4, 0.6) if family == "sd3" else _flux_pair(flux_dev, flux_pipe, 4, 0.6)
    out, expected, _, _ = pair
    actual = pixel_shuffle(out.latents, 2) if family == "sd3" else tokens(out.latents)
    assert_close_scaled(actual, expected, rel=REL_PIPELINE, what=f"{family} img2img, 4 steps × 0.6")


# --- SD inpainting: 4-channel UNet (blending) ---------------------------------------------------------------------


@pytest.mark.float_sensitive
@pytest.mark.parametrize(("scheduler", "strength"), [("ddim", 1.0), ("ddim", 0.7), ("euler", 1.0), ("euler", 0.7)])
def test_inpaint_four_channel_unet_matches_inpaint_pipeline(
    small, small_pipe, argmax_encoding, one_thread, scheduler, strength
):
    """``inpaint(feather=0)`` with an ordinary UNet ≡ StableDiffusionInpaintPipeline, which for a 4-channel UNet
    puts the original's latents, noised to the next step with the start noise, back outside the mask after every
    step (and the clean ones after the last). Strength 1 starts from pure noise (diffusers' ``is_strength_max``),
    0.7 from the image noised. The mask is aligned to 8 px cells, so our per-cell mean equals diffusers' nearest."""
    from diffusers import StableDiffusionInpaintPipeline

    image, mask = _picture(64, 64, seed=5), _block_mask(64, 64, 16, 24, 48, 56)
    ref = _sd_pipeline(StableDiffusionInpaintPipeline, _sd_components(small, scheduler))
    g_ref, g_ours = _seed(), _seed()
    args = dict(num_inference_steps=5, guidance_scale=7.5, negative_prompt=NEGATIVE, output_type="latent")
    expected = ref(
        PROMPT, image=image, mask_image=mask, height=64, width=64, strength=strength, generator=g_ref, **args
    ).images
    assert small_pipe.model.inpaint_channels == 0
    out = small_pipe.inpaint(
        image,
        mask,
        PROMPT,
        strength=strength,
        feather=0,
        scheduler=scheduler,
        window=64,
        generator=g_ours,
        progress=False,
        **args,
    )
    assert out.latents.shape == expected.shape == (1, 4, 8, 8) and out.metadata.mode == "inpaint"
    _same_draws(g_ours, g_ref)
    assert_close_scaled(out.latents, expected, rel=REL_PIPELINE, what=f"4-channel inpaint {scheduler} {strength}")
    # outside the mask the result is the encoded original exactly (the last blend uses the clean latents)
    with torch.no_grad():
        encoded = small_pipe.model.codec.encode(read_image(image))
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[2:6, 3:7] = False
    assert torch.equal(out.latents[..., keep], encoded[..., keep])


# --- SD inpainting: 9-channel UNet (mask and masked-image latents as input) -----------------------------------------


def _nine_channel_unet(small: dict[str, Any]) -> Any:
    """The suite's tiny SD UNet with 9 input channels (latents, mask, masked-image latents), seeded weights."""
    from diffusers import UNet2DConditionModel

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(9)  # test helper only: reproducible random weights
        unet = UNet2DConditionModel.from_config({**small["unet"].config, "in_channels": 9})
    finally:
        torch.random.set_rng_state(state)
    return unet.eval()


@pytest.fixture(scope="module")
def inpainting(small: dict[str, Any]) -> dict[str, Any]:
    """The small SD components with a 9-channel inpainting UNet."""
    return {**small, "unet": _nine_channel_unet(small)}


@pytest.fixture(scope="module")
def inpainting_pipe(inpainting: dict[str, Any]) -> MultiDiffusionPipeline:
    c = inpainting
    model = sd_from_components(
        "tiny-inpainting", c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"].config
    )
    return MultiDiffusionPipeline(model)


def _diffusers_extra(components: dict[str, Any], image: Image.Image, mask: Image.Image) -> torch.Tensor:
    """The 9-channel UNet's extra input as StableDiffusionInpaintPipeline builds it: the binarised mask sampled per
    latent cell (nearest), then the latents (posterior mean) of image · (mask < 0.5)."""
    from diffusers import StableDiffusionInpaintPipeline

    pipe = _sd_pipeline(StableDiffusionInpaintPipeline, components)
    h, w = image.height, image.width
    pixels = pipe.image_processor.preprocess(image, height=h, width=w).float()
    mask_px = pipe.mask_processor.preprocess(mask, height=h, width=w)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels * (mask_px < 0.5)).latent_dist.mode() * pipe.vae.config.scaling_factor
    cells = torch.nn.functional.interpolate(mask_px, size=(h // 8, w // 8))
    return torch.cat([cells, latents], dim=1)


@pytest.mark.float_sensitive
def test_nine_channel_model_reads_mask_and_masked_latents(inpainting, inpainting_pipe, one_thread):
    """``inpaint_channels`` is 5 (mask + 4 latent channels) and the canvas extra is diffusers' own."""
    model = inpainting_pipe.model
    assert model.inpaint_channels == 5 and model.codec.latent_channels == 4
    image, mask = _picture(64, 64, seed=6), _soft_mask(64, 64)
    ours = inpaint_channels(model, read_image(image), read_known(mask, (64, 64)), (64, 64))
    expected = _diffusers_extra(inpainting, image, mask)
    assert ours.shape == expected.shape == (1, 5, 8, 8)
    assert torch.equal(ours[:, :1], expected[:, :1])  # the mask channel is exactly 0/1 in both
    assert 0 < float(expected[:, 0].mean()) < 1
    assert_close_scaled(ours[:, 1:], expected[:, 1:], rel=REL_ENCODE, what="9-channel masked-image latents")


@pytest.mark.float_sensitive
@pytest.mark.parametrize(("scheduler", "strength"), [("ddim", 1.0), ("ddim", 0.7), ("euler", 1.0), ("euler", 0.7)])
def test_inpaint_nine_channel_unet_matches_inpaint_pipeline(
    inpainting, inpainting_pipe, argmax_encoding, one_thread, scheduler, strength
):
    """``inpaint`` with a 9-channel UNet ≡ StableDiffusionInpaintPipeline with it: no blending (the model repaints
    from its own inputs), the extra channels concatenated after the scaled latent input. The mask is grey-ramped and
    not cell-aligned: both binarise it at 0.5 and sample it per cell (nearest)."""
    from diffusers import StableDiffusionInpaintPipeline

    image, mask = _picture(64, 64, seed=7), _soft_mask(64, 64)
    ref = _sd_pipeline(StableDiffusionInpaintPipeline, _sd_components(inpainting, scheduler))
    g_ref, g_ours = _seed(), _seed()
    args = dict(num_inference_steps=5, guidance_scale=7.5, negative_prompt=NEGATIVE, output_type="latent")
    expected = ref(
        PROMPT, image=image, mask_image=mask, height=64, width=64, strength=strength, generator=g_ref, **args
    ).images
    out = inpainting_pipe.inpaint(
        image,
        mask,
        PROMPT,
        strength=strength,
        feather=0,
        scheduler=scheduler,
        window=64,
        generator=g_ours,
        progress=False,
        **args,
    )
    assert out.latents.shape == expected.shape == (1, 4, 8, 8)
    _same_draws(g_ours, g_ref)
    assert_close_scaled(out.latents, expected, rel=REL_PIPELINE, what=f"9-channel inpaint {scheduler} {strength}")


@pytest.mark.float_sensitive
def test_saved_inpainting_folder_loads_with_its_extra_channels(inpainting, inpainting_pipe, tmp_path, one_thread):
    """A folder whose model_index.json names StableDiffusionInpaintPipeline loads through ``from_pretrained`` as the
    SD family with 5 extra channels, and inpaints as the model in memory does."""
    import json

    from diffusers import StableDiffusionInpaintPipeline

    folder = tmp_path / "tiny-inpainting"
    _sd_pipeline(StableDiffusionInpaintPipeline, inpainting).save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"
    pipe = MultiDiffusionPipeline.from_pretrained(str(folder), device="cpu")
    assert pipe.model.family == "stable-diffusion" and pipe.model.inpaint_channels == 5
    image, mask = _picture(64, 64, seed=8), _block_mask(64, 64, 8, 8, 40, 48)
    args = dict(prompt=PROMPT, feather=0, num_inference_steps=3, window=64, output_type="latent", progress=False)
    loaded = pipe.inpaint(image, mask, generator=_seed(), **args).latents
    in_memory = inpainting_pipe.inpaint(image, mask, generator=_seed(), **args).latents
    assert_close_scaled(loaded, in_memory, rel=1e-5, what="saved folder vs in memory")


@pytest.mark.float_sensitive
def test_nine_channel_canvas_crops_the_extra_channels_per_view(inpainting, inpainting_pipe, one_thread):
    """A 96 px canvas, window 64, stride 32 px: 2 × 2 views. Every model call gets, after each row's 4 latent
    channels, the crop of the canvas extra (diffusers' mask and masked latents of the whole canvas) at that row's
    view; and the result equals the per-view reference that calls the UNet on each view with that crop."""
    image, mask = _picture(96, 96, seed=10), _soft_mask(96, 96)
    extra = _diffusers_extra(inpainting, image, mask)
    model = inpainting_pipe.model
    calls: list[tuple[torch.Tensor, list[Any]]] = []
    inner = model.denoiser

    def spy(x, t, conds, views=None):
        calls.append((x.detach().clone(), list(views)))
        return inner(x, t, conds, views=views)

    model.denoiser = spy
    try:
        ours = inpainting_pipe.inpaint(
            image,
            mask,
            PROMPT,
            feather=0,
            num_inference_steps=4,
            guidance_scale=7.5,
            scheduler="ddim",
            window=64,
            stride=32,
            weights="uniform",
            generator=_seed(),
            output_type="latent",
            progress=False,
        ).latents
    finally:
        model.denoiser = inner

    views = layout_views(12, 12, 8, 4)
    assert len(views) == 4 and len({v.top for v in views}) == 2 and len({v.left for v in views}) == 2
    # ours: exactly our canvas extra, sliced at each row's view (checked against diffusers' in the test above)
    canvas_extra = inpaint_channels(model, read_image(image), read_known(mask, (96, 96)), (96, 96))
    seen = set()
    for x, call_views in calls:
        assert x.shape[1] == 9
        rows = x.shape[0] // len(call_views)
        for i, view in enumerate(call_views):
            window = canvas_extra[:, :, view.top : view.top + view.height, view.left : view.left + view.width]
            assert torch.equal(x[i * rows : (i + 1) * rows, 4:], window.expand(rows, -1, -1, -1)), view
            seen.add(view)
    assert seen == set(views)

    # The per-view reference (each view stepped alone with its own DDIM copy, then averaged: paper Eq. 5 on x_{t−1}).
    scheduler = make_scheduler("ddim", inpainting["scheduler"].config)
    scheduler.set_timesteps(4)
    latents = torch.randn((1, 4, 12, 12), generator=_seed()) * scheduler.init_noise_sigma
    cond, uncond = model.encode_prompts([PROMPT]), model.encode_prompts([""])
    unet = inpainting["unet"]

    def predict(crop, t, view):
        rows, cols = slice(view.top, view.top + view.height), slice(view.left, view.left + view.width)
        inp = torch.cat(
            [scheduler.scale_model_input(torch.cat([crop, crop]), t), extra[:, :, rows, cols].repeat(2, 1, 1, 1)], 1
        )
        eps_u, eps_c = unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
        return eps_u + 7.5 * (eps_c - eps_u)

    weights = view_weights(views, 12, 12, "uniform")
    expected = per_view_stepped(predict, scheduler, latents, views, weights)
    assert expected.abs().max() > 0.5
    assert_close_scaled(ours, expected, rel=REL_REFERENCE, what="9-channel 2×2 views vs per-view reference")
