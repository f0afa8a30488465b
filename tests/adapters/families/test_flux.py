"""The Flux family on tiny random components: loading, diffusers' FluxPipeline, the per-view reference, positions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from multidiffusion.adapters import load_model, make_scheduler
from multidiffusion.adapters.codecs.packed import tokens, unpack
from multidiffusion.adapters.families import flux
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.reference_impl import per_view_stepped
from tests.helpers.tiny_flux import T5_MAX_LENGTH, flux_pipeline, loaded_flux, make_flux_components, save_flux_folder

PROMPT = "a photo of the dolomites"
# Relative to max|expected| (tests/helpers/numerics.py), latents |x| ≈ 4–5. One view against FluxPipeline: the same
# operations in the same order, measured 0 for embedded guidance and 2.6e-7 with true CFG (the two halves in
# one batch here, two calls there); other flow solvers (DPM-Solver++, UniPC) 0.
REL_PIPELINE = 1e-4
# A 2 × 3-view canvas against the per-view reference (each view stepped with its own FlowMatchEuler copy, then
# averaged; the step is linear, so fuse-then-step equals it up to rounding): measured worst 2.0e-7.
REL_REFERENCE = 1e-5


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dev-style tiny Flux (guidance embeds, dynamic shifting)."""
    return make_flux_components(tmp_path_factory.mktemp("flux-dev"), guidance_embeds=True)


@pytest.fixture(scope="module")
def schnell(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A schnell-style tiny Flux (no guidance embeds, no dynamic shifting)."""
    return make_flux_components(tmp_path_factory.mktemp("flux-schnell"), guidance_embeds=False, seed=1)


@pytest.fixture(scope="module")
def dev_folder(dev: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_flux_folder(dev, tmp_path_factory.mktemp("model") / "tiny-flux-dev")


@pytest.fixture(scope="module")
def dev_pipe(dev: dict[str, Any]) -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline(loaded_flux(dev))


@pytest.fixture(scope="module")
def schnell_pipe(schnell: dict[str, Any]) -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline(loaded_flux(schnell))


def _seed(n: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(n)


def test_saved_folder_loads_through_load_model(dev, dev_folder, tmp_path):
    model = load_model(str(dev_folder))
    assert model.family == "flux" and model.name == "tiny-flux-dev"
    assert model.embed_guidance is not None and model.default_guidance_scale == 3.5
    assert model.default_scheduler == "FlowMatchEulerDiscreteScheduler" and model.noise_patch == 2
    assert model.native_window == 64 and model.codec.scale_factor == 16 and model.codec.latent_channels == 64
    assert model.differentiable is not None and model.weights_sha256 is not None
    assert model.bytes_per_view_cell == 32 * 32 * 4  # 32 × hidden 32 × fp32

    # The same text conditioning (both tokenizers round-tripped) and the same prediction as in memory.
    ours = loaded_flux(dev)
    a, b = model.encode_prompts([PROMPT, "x"]), ours.encode_prompts([PROMPT, "x"])
    assert a.prompt_embeds.shape == (2, T5_MAX_LENGTH, 32) and a.pooled.shape == (2, 32)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds) and torch.equal(a.pooled, b.pooled)
    x = torch.randn(2, 64, 4, 6, generator=_seed())
    t = torch.tensor(700.0)
    out = model.denoiser(x, t, [model.embed_guidance(a, 3.5)], [View(0, 0, 4, 6)])
    assert torch.equal(out, ours.denoiser(x, t, [ours.embed_guidance(b, 3.5)], [View(0, 0, 4, 6)]))

    schnell_folder = save_flux_folder(make_flux_components(tmp_path, guidance_embeds=False), tmp_path / "schnell")
    schnell = load_model(str(schnell_folder))
    assert schnell.embed_guidance is None and schnell.default_guidance_scale == 1.0


@pytest.mark.float_sensitive
@pytest.mark.parametrize(
    "kind, guidance, negative",
    [("dev", 3.5, None), ("dev", 1.0, None), ("schnell", 1.0, None), ("schnell", 3.0, "blurry")],
)
def test_one_view_matches_flux_pipeline(dev, schnell, dev_pipe, schnell_pipe, kind, guidance, negative):
    """One 128 × 192 px view (8 × 12 tokens; the default 1024 px window shrinks to the canvas): dev embeds g;
    schnell runs no guidance at g = 1 and true CFG at g > 1 with a negative prompt (``true_cfg_scale``)."""
    components, pipe = (dev, dev_pipe) if kind == "dev" else (schnell, schnell_pipe)
    extra = {"guidance_scale": guidance} if kind == "dev" else {"true_cfg_scale": guidance}
    expected = flux_pipeline(components)(
        PROMPT,
        negative_prompt=negative,
        height=128,
        width=192,
        num_inference_steps=4,
        generator=_seed(),
        output_type="latent",
        max_sequence_length=T5_MAX_LENGTH,
        **extra,
    ).images
    ours = pipe(
        PROMPT,
        negative_prompt=negative,
        height=128,
        width=192,
        num_inference_steps=4,
        guidance_scale=guidance,
        generator=_seed(),
        output_type="latent",
        progress=False,
    ).latents
    assert ours.shape == (1, 64, 8, 12) and expected.shape == (1, 96, 64)
    assert expected.abs().max() > 1
    assert_close_scaled(tokens(ours), expected, rel=REL_PIPELINE, what=f"{kind} g={guidance} vs FluxPipeline")


@pytest.mark.float_sensitive
@pytest.mark.parametrize("scheduler", ["flow_dpmpp_2m", "flow_unipc"])
def test_other_flow_schedulers_match_flux_pipeline(dev, dev_pipe, scheduler):
    """Multistep solvers on flow sigmas get μ (dynamic shift) but no sigmas, as FluxPipeline passes them."""
    components = {**dev, "scheduler": make_scheduler(scheduler, dev_pipe.model.scheduler_config)}
    expected = flux_pipeline(components)(
        PROMPT,
        height=128,
        width=128,
        num_inference_steps=4,
        generator=_seed(),
        output_type="latent",
        max_sequence_length=T5_MAX_LENGTH,
    ).images
    ours = dev_pipe(
        PROMPT,
        height=128,
        width=128,
        num_inference_steps=4,
        scheduler=scheduler,
        generator=_seed(),
        output_type="latent",
        progress=False,
    ).latents
    assert_close_scaled(tokens(ours), expected, rel=REL_PIPELINE, what=f"{scheduler} vs FluxPipeline")


def test_timestep_options_follow_the_view_and_the_scheduler(dev, schnell):
    from diffusers import FlowMatchHeunDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = dev["scheduler"].config
    options = flux.timestep_options(dev["scheduler"], 4, (8, 12))  # μ from the view's 96 tokens
    assert np.allclose(options["sigmas"], [1.0, 0.75, 0.5, 0.25])
    assert options["mu"] == pytest.approx(
        calculate_shift(96, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    )
    assert "mu" not in flux.timestep_options(schnell["scheduler"], 4, (8, 12))  # no dynamic shifting: unread
    assert flux.timestep_options(FlowMatchHeunDiscreteScheduler.from_config(config), 4, (8, 8)) == {}


def _reference_predict(components: dict[str, Any], guidance: float, negative: str | None):
    """A per-view prediction in diffusers' own layout and calls: crop (1, 16, 2h, 2w) of VAE latents → velocity."""
    from diffusers import FluxPipeline

    pipe = flux_pipeline(components)
    transformer = components["transformer"]
    embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, max_sequence_length=T5_MAX_LENGTH)
    if negative is not None:
        negative_embeds, negative_pooled, _ = pipe.encode_prompt(negative, max_sequence_length=T5_MAX_LENGTH)
    embedded = torch.full([1], guidance) if transformer.config.guidance_embeds else None

    def predict(crop: torch.Tensor, t: torch.Tensor, view: Any) -> torch.Tensor:
        _, c, h, w = crop.shape
        packed = FluxPipeline._pack_latents(crop, 1, c, h, w)
        ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, crop.device, crop.dtype)
        timestep = t.expand(1).to(crop.dtype) / 1000

        def run(e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return transformer(
                hidden_states=packed,
                timestep=timestep,
                guidance=embedded,
                pooled_projections=p,
                encoder_hidden_states=e,
                txt_ids=text_ids,
                img_ids=ids,
                return_dict=False,
            )[0]

        out = run(embeds, pooled)
        if negative is not None:
            uncond = run(negative_embeds, negative_pooled)
            out = uncond + guidance * (out - uncond)
        return FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)

    return predict


@pytest.mark.float_sensitive
@pytest.mark.parametrize("kind, guidance, negative", [("dev", 3.5, None), ("schnell", 2.0, "blurry")])
def test_canvas_matches_per_view_reference(dev, schnell, dev_pipe, schnell_pipe, kind, guidance, negative):
    """192 × 256 px canvas, 128 px window, 64 px stride: 2 × 3 views of 8 × 8 tokens, 3 FlowMatchEuler steps."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    components, pipe = (dev, dev_pipe) if kind == "dev" else (schnell, schnell_pipe)
    ours = pipe(
        PROMPT,
        negative_prompt=negative,
        height=192,
        width=256,
        window=128,
        stride=64,
        weights="uniform",  # the reference fuses with the paper's weights
        num_inference_steps=3,
        guidance_scale=guidance,
        generator=_seed(5),
        output_type="latent",
        progress=False,
    ).latents

    config = components["scheduler"].config
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    mu = calculate_shift(64, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    retrieve_timesteps(scheduler, 3, "cpu", sigmas=np.linspace(1.0, 1 / 3, 3), mu=mu)
    latents = torch.randn((1, 16, 24, 32), generator=_seed(5))  # FluxPipeline's draw at the VAE's resolution
    views = [View(top, left, 16, 16) for top in (0, 8) for left in (0, 8, 16)]  # VAE cells
    expected = per_view_stepped(
        _reference_predict(components, guidance, negative), scheduler, latents, views, [torch.ones(16, 16)] * 6
    )
    assert_close_scaled(unpack(ours, 2), expected, rel=REL_REFERENCE, what=f"{kind} canvas vs per-view reference")


def test_position_ids_local_is_offset_free_and_canvas_is_not(dev):
    model = loaded_flux(dev)
    condition = model.embed_guidance(model.encode_prompts([PROMPT]), 3.5)
    crop = torch.randn(1, 64, 6, 6, generator=_seed())
    t = torch.tensor(500.0)
    assert model.denoiser.position_ids == "local"
    here, there = View(0, 0, 6, 6), View(4, 10, 6, 6)
    local = [model.denoiser(crop, t, [condition], [v]) for v in (here, there)]
    assert torch.equal(local[0], local[1])

    canvas = flux.FluxDenoiser(dev["transformer"], position_ids="canvas")
    moved = [canvas(crop, t, [condition], [v]) for v in (here, there)]
    assert torch.equal(moved[0], local[0])  # at offset (0, 0) the two agree
    change = float((moved[1] - moved[0]).abs().max() / moved[0].abs().max())
    assert change > 1e-4  # measured 5e-3 on this random model

    # Two views in one batch under "canvas": one transformer call each, rows back in their places.
    other = model.embed_guidance(model.encode_prompts(["a red ball"]), 2.0)
    pair = torch.randn(2, 64, 6, 6, generator=_seed(4))
    batched = canvas(pair, t, [condition, other], [here, there])
    assert torch.equal(batched[:1], canvas(pair[:1], t, [condition], [here]))
    assert torch.equal(batched[1:], canvas(pair[1:], t, [other], [there]))

    # The differentiable denoiser follows the sampling denoiser's setting.
    model.denoiser.position_ids = "canvas"
    follows = model.differentiable.denoiser(crop, t, [condition], [there])
    assert torch.equal(follows, moved[1])
    with pytest.raises(InvalidInputError, match="position_ids"):
        model.denoiser.position_ids = "global"


def test_regions_and_sync_run(dev_pipe):
    out = dev_pipe.regions(
        [Region("a red ball", box=(0, 0, 128, 128)), Region("the sea", box=(128, 64, 256, 192))],
        background="a sandy beach",
        height=192,
        width=256,
        window=128,
        stride=64,
        num_inference_steps=5,  # bootstrapping runs for the first step: flow matching noises by scale_noise
        generator=_seed(),
        output_type="pt",
        progress=False,
    )
    assert out.images.shape == (1, 3, 192, 256) and bool(torch.isfinite(out.images).all())

    synced = dev_pipe(
        PROMPT,
        height=128,
        width=256,
        window=128,
        stride=64,
        num_inference_steps=2,
        sync=True,
        sync_loss="builtin",
        generator=_seed(),
        output_type="pt",
        progress=False,
    )
    assert synced.images.shape == (1, 3, 128, 256) and bool(torch.isfinite(synced.images).all())


def test_cli_panorama_and_regions_on_the_saved_folder(dev_folder, tmp_path):
    from multidiffusion.interfaces.cli.main import main

    view = ["--window", "128", "--stride", "64", "--steps", "2", "--seed", "1", "-q"]
    out = tmp_path / "pano.png"
    args = ["panorama", PROMPT, "--model", str(dev_folder), "--out", str(out), "--height", "128", "--width", "256"]
    assert main([*args, *view]) == 0
    assert Image.open(out).size == (256, 128)

    layout = tmp_path / "layout.json"
    regions = [{"name": "ball", "prompt": "a red ball", "box": [0, 0, 128, 128]}]
    layout.write_text(json.dumps({"width": 256, "height": 128, "background": "a sandy beach", "regions": regions}))
    out = tmp_path / "regions.png"
    assert main(["regions", "--regions-file", str(layout), "--model", str(dev_folder), "--out", str(out), *view]) == 0
    assert Image.open(out).size == (256, 128)


def test_a_prompt_past_the_t5_limit_warns_once(dev_pipe):
    """T5 carries Flux's prompt; past its max_sequence_length (16 for the tiny tokenizer) the rest is cut."""
    import warnings

    common = dict(height=128, width=128, num_inference_steps=1, progress=False, output_type="latent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dev_pipe("sky", **common)
        dev_pipe("a red ball on the beach at sunset", **common)
    cut = [str(w.message) for w in caught if "tokens" in str(w.message)]
    assert cut == [
        "the prompt 'a red ball on the beach at sunset' is 27 tokens; the text encoder reads the first 16 "
        "(special tokens included) and cuts it there"
    ]
