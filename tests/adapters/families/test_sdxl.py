"""The SDXL adapter on tiny random components: loading, equality with diffusers' StableDiffusionXLPipeline, the
multi-view engine against the per-view reference, crop-coordinate handling, regions, SyncDiffusion, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from multidiffusion.adapters import load_model, make_scheduler
from multidiffusion.adapters.families.sdxl import SdxlDenoiser, from_components
from multidiffusion.core import layout_views, view_weights
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.reference_impl import per_view_stepped
from tests.helpers.tiny_sdxl import SAMPLE_SIZE, make_sdxl_components, save_sdxl_folder, sdxl_pipeline, tiny_sdxl_unet

PROMPT = "a photo of the dolomites"
NATIVE_PX = SAMPLE_SIZE * 8  # 128
# Relative to max|expected| (tests/helpers/numerics.py); latents |x| ≈ 15–20. One view, 4 steps of the tiny UNet, ours
# vs diffusers: bitwise equal (measured 0 with Euler and DDIM, g = 5 and 1). Six views, 4 Euler steps with CFG, ours
# batched and fused vs the per-view reference: worst measured 9.3e-7 (zero and offset crops), so 2e-5 leaves 20×.
REL_DIFFUSERS = 1e-5
REL_REFERENCE = 2e-5


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_sdxl_components(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="module")
def sdxl_folder(sdxl: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_sdxl_folder(sdxl, tmp_path_factory.mktemp("model") / "tiny-sdxl")


def _loaded(c: dict[str, Any], crop_coords: str = "zero", **changes: Any):
    c = {**c, **changes}
    return from_components(
        "tiny-sdxl",
        c["unet"],
        c["vae"],
        c["text_encoder"],
        c["tokenizer"],
        c["text_encoder_2"],
        c["tokenizer_2"],
        c["scheduler"].config,
        crop_coords=crop_coords,
    )


@pytest.fixture(scope="module")
def sdxl_pipe(sdxl: dict[str, Any]) -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline(_loaded(sdxl))


def test_saved_folder_loads_through_load_model(sdxl, sdxl_folder, one_thread):
    model = load_model(str(sdxl_folder), device="cpu")
    assert model.family == "sdxl" and model.native_window == SAMPLE_SIZE and model.codec.scale_factor == 8
    assert model.default_scheduler == "EulerDiscreteScheduler" and model.default_guidance_scale == 5.0
    assert model.denoiser.crop_coords == "zero" and model.weights_sha256 is not None
    for key in ("unet", "vae", "text_encoder", "text_encoder_2"):
        saved, original = model.components[key].state_dict(), sdxl[key].state_dict()
        assert saved.keys() == original.keys(), key
        assert all(torch.equal(saved[name], original[name]) for name in saved), key
    # prompts encoded as diffusers encodes them: penultimate states of both encoders, pooled of the second;
    # no negative prompt + force_zeros_for_empty_prompt (the saved config) → zeros
    pipe = sdxl_pipeline(sdxl)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, device="cpu")
    ours, empty = model.encode_prompts([PROMPT]), model.encode_prompts([""])
    assert ours.prompt_embeds.shape == (1, 77, 32) and ours.pooled.shape == (1, 16)
    assert torch.equal(ours.prompt_embeds, embeds)
    # the reloaded projection's matmul may round differently (1 ulp measured)
    assert_close_scaled(ours.pooled, pooled, rel=1e-6, what="pooled projection, reloaded vs in memory")
    assert torch.equal(empty.prompt_embeds, negative) and torch.equal(empty.pooled, negative_pooled)
    assert not bool(negative.any())


def test_scheduler_and_guidance_defaults_follow_the_config(sdxl):
    from diffusers import EulerAncestralDiscreteScheduler

    turbo = EulerAncestralDiscreteScheduler.from_config(sdxl["scheduler"].config, timestep_spacing="trailing")
    model = _loaded(sdxl, scheduler=turbo)  # SDXL-Turbo's scheduler: its own, at guidance 1 (off)
    assert model.default_scheduler == "EulerAncestralDiscreteScheduler" and model.default_guidance_scale == 1.0
    with pytest.raises(InvalidInputError, match="crop_coords"):
        SdxlDenoiser(sdxl["unet"], crop_coords="centre")


def _diffusers_latents(sdxl, scheduler: str, guidance: float, seed: int = 3) -> torch.Tensor:
    pipe = sdxl_pipeline(sdxl, scheduler=make_scheduler(scheduler, sdxl["scheduler"].config))
    return pipe(
        PROMPT,
        height=NATIVE_PX,
        width=NATIVE_PX,
        num_inference_steps=4,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
    ).images


@pytest.mark.float_sensitive
@pytest.mark.parametrize(
    ("scheduler", "guidance"), [("EulerDiscreteScheduler", 5.0), ("ddim", 5.0), ("EulerDiscreteScheduler", 1.0)]
)
def test_one_view_matches_stable_diffusion_xl_pipeline(sdxl, sdxl_pipe, scheduler, guidance, one_thread):
    expected = _diffusers_latents(sdxl, scheduler, guidance)
    ours = sdxl_pipe(
        PROMPT,
        height=NATIVE_PX,
        width=NATIVE_PX,
        num_inference_steps=4,
        guidance_scale=guidance,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        progress=False,
    ).latents
    assert ours.shape == expected.shape == (1, 4, SAMPLE_SIZE, SAMPLE_SIZE)
    assert expected.abs().max() > 1  # not trivially small
    assert_close_scaled(ours, expected, rel=REL_DIFFUSERS, what="ours vs StableDiffusionXLPipeline")


def test_default_scheduler_is_the_configs(sdxl, sdxl_pipe, one_thread):
    """With no scheduler named, a run uses the model's own (Euler) at g = 5, as the diffusers pipeline does."""
    ours = sdxl_pipe(
        PROMPT,
        height=NATIVE_PX,
        width=NATIVE_PX,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        progress=False,
    )
    assert ours.metadata.settings.scheduler == "EulerDiscreteScheduler"
    assert ours.metadata.settings.guidance_scale == 5.0
    assert_close_scaled(
        ours.latents, _diffusers_latents(sdxl, "EulerDiscreteScheduler", 5.0), rel=REL_DIFFUSERS, what="ours"
    )


@pytest.mark.float_sensitive
def test_guidance_embedding_unet_matches_diffusers(sdxl, one_thread):
    """A UNet with time_cond_proj_dim (LCM-SDXL) embeds w = g − 1 and makes no unconditional pass, as diffusers."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(5)
        unet = tiny_sdxl_unet(time_cond_proj_dim=8)
    finally:
        torch.random.set_rng_state(state)
    model = _loaded(sdxl, unet=unet)
    assert model.embed_guidance is not None
    kwargs = {"height": NATIVE_PX, "width": NATIVE_PX, "num_inference_steps": 3, "guidance_scale": 4.0}
    expected = sdxl_pipeline(sdxl, unet=unet)(
        PROMPT, generator=torch.Generator().manual_seed(1), output_type="latent", **kwargs
    ).images
    ours = MultiDiffusionPipeline(model)(
        PROMPT, generator=torch.Generator().manual_seed(1), output_type="latent", progress=False, **kwargs
    ).latents
    assert_close_scaled(ours, expected, rel=REL_DIFFUSERS, what="guidance-embedding UNet vs diffusers")


def _time_ids(view: View, crop_coords: str) -> torch.Tensor:
    """SDXL's add_time_ids written out independently: (h, w) px, crop (top, left) px, (h, w) px."""
    h, w = view.height * 8, view.width * 8
    crop = (view.top * 8, view.left * 8) if crop_coords == "offset" else (0, 0)
    return torch.tensor([[h, w, *crop, h, w]], dtype=torch.float32)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("crop_coords", ["zero", "offset"])
def test_canvas_matches_per_view_reference(sdxl, crop_coords, one_thread):
    """2 rows × 3 columns of 16-cell views (stride 8) on 24 × 32 cells, 4 Euler steps, CFG 5: our batched, fused
    engine against each view stepped on its own (reference_impl), the UNet called directly by the reference."""
    steps, guidance, seed = 4, 5.0, 2
    h, w = 24, 32
    unet = sdxl["unet"]
    embeds, negative, pooled, negative_pooled = sdxl_pipeline(sdxl).encode_prompt(PROMPT, device="cpu")
    sched = make_scheduler("EulerDiscreteScheduler", sdxl["scheduler"].config)
    sched.set_timesteps(steps)

    def predict(crop: torch.Tensor, t: torch.Tensor, view: View) -> torch.Tensor:
        index = int((sched.timesteps == t).nonzero()[0])
        scaled = crop / (sched.sigmas[index] ** 2 + 1) ** 0.5  # EulerDiscreteScheduler.scale_model_input
        eps = unet(
            torch.cat([scaled, scaled]),
            t,
            encoder_hidden_states=torch.cat([negative, embeds]),
            added_cond_kwargs={
                "text_embeds": torch.cat([negative_pooled, pooled]),
                "time_ids": _time_ids(view, crop_coords).repeat(2, 1),
            },
        ).sample
        eps_u, eps_c = eps.chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    views = layout_views(h, w, 16, 8)
    assert len(views) == 6 and len({v.top for v in views}) == 2
    latents = torch.randn((1, 4, h, w), generator=torch.Generator().manual_seed(seed)) * sched.init_noise_sigma
    expected = per_view_stepped(predict, sched, latents, views, view_weights(views, h, w, "uniform"))
    ours = MultiDiffusionPipeline(_loaded(sdxl, crop_coords))(
        PROMPT,
        height=h * 8,
        width=w * 8,
        num_inference_steps=steps,
        guidance_scale=guidance,
        window=NATIVE_PX,
        stride=64,
        weights="uniform",  # the reference fuses with the paper's weights
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        progress=False,
    ).latents
    assert expected.abs().max() > 1
    assert_close_scaled(ours, expected, rel=REL_REFERENCE, what=f"ours vs per-view reference ({crop_coords})")


def test_crop_coords_position_dependence(sdxl, one_thread):
    """ "zero": the same crop gives the same prediction at any canvas offset; "offset": it depends on the offset,
    exactly as the UNet with crops_coords_top_left = (top, left) px."""
    model = _loaded(sdxl)
    cond = model.encode_prompts([PROMPT])
    x = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    near, far = View(0, 0, 16, 16), View(8, 24, 16, 16)
    denoiser = model.denoiser
    assert denoiser.crop_coords == "zero"
    assert torch.equal(denoiser(x, t, [cond], [near]), denoiser(x, t, [cond], [far]))
    assert torch.equal(denoiser(x, t, [cond], [near]), denoiser(x, t, [cond]))  # no canvas: (0, 0)
    denoiser.crop_coords = "offset"
    try:
        at_near, at_far = denoiser(x, t, [cond], [near]), denoiser(x, t, [cond], [far])
        assert torch.equal(at_near, model.differentiable.denoiser(x, t, [cond], [near]))  # shares the setting
    finally:
        denoiser.crop_coords = "zero"
    unet = sdxl["unet"]
    direct = unet(
        x, t, cond.prompt_embeds, added_cond_kwargs={"text_embeds": cond.pooled, "time_ids": _time_ids(far, "offset")}
    ).sample
    assert torch.equal(at_near, denoiser(x, t, [cond], [near]))  # (0, 0) both ways at the origin
    assert not torch.allclose(at_near, at_far)
    # N = 2 canvases per condition: rows i·N … i·N + N − 1 take conds[i] and views[i]
    pair = model.encode_prompts([PROMPT, "a lake"])
    batch = torch.randn((4, 4, 16, 16), generator=torch.Generator().manual_seed(1))
    denoiser.crop_coords = "offset"
    try:
        together = denoiser(batch, t, [pair, pair], [near, far])
        apart = torch.cat([denoiser(batch[:2], t, [pair], [near]), denoiser(batch[2:], t, [pair], [far])])
    finally:
        denoiser.crop_coords = "zero"
    assert_close_scaled(together, apart, rel=1e-5, what="batched rows vs one view at a time")
    assert_close_scaled(at_far, direct, rel=1e-6, what="offset crop vs UNet with crop (64, 192) px")


def test_regions_and_sync_give_finite_images(sdxl_pipe, one_thread):
    regions = [Region("a red ball", box=(0, 0, 128, 128)), Region("the sea", box=(128, 0, 256, 128))]
    out = sdxl_pipe.regions(
        regions,
        "a sandy beach",
        height=128,
        width=256,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
        progress=False,
    )
    assert out.images.shape == (1, 3, 128, 256) and bool(torch.isfinite(out.images).all())
    synced = sdxl_pipe(
        PROMPT,
        height=128,
        width=192,
        num_inference_steps=2,
        sync=True,
        sync_loss="builtin",
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
        progress=False,
    )
    assert synced.images.shape == (1, 3, 128, 192) and bool(torch.isfinite(synced.images).all())


def test_differentiable_parts_give_input_gradients(sdxl):
    model = _loaded(sdxl)
    parts = model.differentiable
    x = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0), requires_grad=True)
    cond = model.encode_prompts([PROMPT])
    out = parts.denoiser(x, torch.tensor(400), [cond], [View(0, 0, 16, 16)])
    image = parts.decode(x - out)
    image.square().mean().backward()
    assert image.shape == (1, 3, 128, 128) and x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert torch.equal(out.detach(), model.denoiser(x.detach(), torch.tensor(400), [cond], [View(0, 0, 16, 16)]))


def _half_vae(sdxl, force_upcast: bool):
    vae = copy.deepcopy(sdxl["vae"]).half()
    vae.register_to_config(force_upcast=force_upcast)
    return vae


def test_force_upcast_vae_decodes_in_float32(sdxl):
    """A float16 VAE with force_upcast (SDXL's config) decodes in float32, as diffusers' pipeline does."""
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    model = _loaded(sdxl, vae=_half_vae(sdxl, force_upcast=True))
    assert model.codec.vae.dtype == torch.float32
    expected = _loaded(sdxl, vae=_half_vae(sdxl, force_upcast=False).float()).codec.decode(latents)
    assert torch.equal(model.codec.decode(latents), expected)


def test_non_finite_half_decode_is_redone_in_float32(sdxl):
    """SDXL's VAE overflows in float16 (black images): VaeCodec redoes such a decode in float32, with a warning."""
    vae = _half_vae(sdxl, force_upcast=False)  # e.g. a fine-tune that clears force_upcast
    model = _loaded(sdxl, vae=vae)
    assert model.codec.vae.dtype == torch.float16

    def overflow_in_half(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return (
            output.masked_fill(torch.ones_like(output, dtype=torch.bool), float("inf"))
            if output.dtype == torch.float16
            else output
        )

    handle = vae.decoder.conv_out.register_forward_hook(overflow_in_half)
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    try:
        with pytest.warns(RuntimeWarning, match="decoding again in float32"):
            image = model.codec.decode(latents)
    finally:
        handle.remove()
    assert vae.dtype == torch.float16  # restored after the float32 retry
    expected = _loaded(sdxl, vae=_half_vae(sdxl, force_upcast=False).float()).codec.decode(latents)
    assert bool(torch.isfinite(image).all()) and float(image.std()) > 0.01  # finite, not a flat black frame
    assert_close_scaled(image, expected, rel=1e-5, what="float32 retry vs float32 decode")


def test_single_file_loader_says_what_is_missing(tmp_path):
    from multidiffusion.adapters.families.sdxl import load_single_file

    with pytest.raises(InvalidInputError, match="does not exist"):
        load_single_file(str(tmp_path / "sdxl.safetensors"), torch.float32, torch.device("cpu"))


def test_cli_panorama_and_regions_on_the_saved_folder(sdxl_folder, tmp_path, one_thread):
    from multidiffusion.interfaces.cli.main import main

    fast = ["--steps", "2", "--seed", "1", "-q"]
    out = tmp_path / "pano.png"
    assert (
        main(
            [
                "panorama",
                PROMPT,
                "--model",
                str(sdxl_folder),
                "--out",
                str(out),
                "--height",
                "128",
                "--width",
                "192",
                *fast,
            ]
        )
        == 0
    )
    assert Image.open(out).size == (192, 128)
    meta = json.loads(Image.open(out).text["multidiffusion"])
    assert meta["scheduler"] == "EulerDiscreteScheduler" and meta["guidance_scale"] == 5.0

    layout = tmp_path / "layout.json"
    layout.write_text(
        json.dumps(
            {
                "width": 256,
                "height": 128,
                "background": "a sandy beach",
                "regions": [
                    {"prompt": "a red ball", "box": [16, 16, 112, 112]},
                    {"prompt": "the sea", "box": [128, 0, 256, 64]},
                ],
            }
        )
    )
    out = tmp_path / "regions.png"
    assert main(["regions", "--regions-file", str(layout), "--model", str(sdxl_folder), "--out", str(out), *fast]) == 0
    assert Image.open(out).size == (256, 128)
