"""Stable Diffusion 3 on tiny random components (tests/helpers/tiny_sd3.py): loading a saved folder with and without T5
and a single file, one view ≡ ``StableDiffusion3Pipeline`` (static and dynamic shift), a 2 × 3-view canvas ≡ the
per-view reference, position independence of the views, the tiled 16-channel VAE, regions, SyncDiffusion, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.nn.functional import pixel_shuffle, pixel_unshuffle

from multidiffusion.adapters import load_model
from multidiffusion.adapters.families.sd3 import (
    Sd3Condition,
    absent_components,
    from_components,
    make_timestep_options,
    named_config,
)
from multidiffusion.core import layout_views, view_weights
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.interfaces.cli.main import main
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.reference_impl import per_view_stepped
from tests.helpers.tiny_sd3 import make_sd3_components, save_sd3_folder, sd3_pipeline, sd3_scheduler

PROMPT = "a red fox in the snow"
# Relative to max|expected| (tests/helpers/numerics.py). One view, 3 flow-Euler steps of the tiny MMDiT, ours (a folder
# loaded by load_model, guidance batched by core.engine.guidance) vs StableDiffusion3Pipeline on the same components;
# latents |x| ≈ 5. Worst measured 7.9e-7 (g = 7), 1.0e-7 (g = 1), 1.0e-6 (no T5), 0 (dynamic shift, in-memory parts).
REL_ONE_VIEW = 1e-4
# 2 × 3 views, 3 steps with guidance: fuse-then-step vs each view stepped on its own and then averaged. FlowMatch
# Euler's step x + (σ_next − σ) v is affine in v, so the two agree to float rounding; worst measured 5.3e-7.
REL_PER_VIEW = 1e-5
# Tiled vs whole decode of the 16-channel VAE (shift factor applied before either): the tiled decoder normalises
# with whole-canvas statistics and exact halos (adapters.codecs.tiled_vae), so only float rounding differs; images in
# [−1, 1]-ish magnitude (max 3.2). Worst measured 1.3e-6.
REL_TILED = 2e-5


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return make_sd3_components(tmp_path_factory.mktemp("sd3"), seed=0)


@pytest.fixture(scope="module")
def sd3_folder(sd3, tmp_path_factory):
    return save_sd3_folder(sd3, tmp_path_factory.mktemp("sd3-model") / "tiny-sd3")


@pytest.fixture(scope="module")
def model(sd3_folder):
    return load_model(str(sd3_folder), device="cpu")


@pytest.fixture(scope="module")
def pipe(model):
    return MultiDiffusionPipeline(model)


def _run(pipe, **kwargs):
    args = dict(num_inference_steps=3, generator=torch.Generator().manual_seed(3), progress=False)
    return pipe(PROMPT, **{**args, **kwargs})


def _diffusers(components, **kwargs):
    args = dict(num_inference_steps=3, generator=torch.Generator().manual_seed(3), output_type="latent")
    return sd3_pipeline(components)(PROMPT, **{**args, **kwargs}).images


def test_folder_loads_through_load_model(model, sd3):
    assert model.family == "sd3"
    assert model.codec.scale_factor == 16 and model.codec.latent_channels == 64 and model.noise_patch == 2
    assert model.native_window == 16  # sample_size 32 VAE cells = 16 patches = 256 px
    assert model.default_scheduler == "FlowMatchEulerDiscreteScheduler" and model.default_guidance_scale == 7.0
    assert model.scheduler_config["shift"] == 3.0
    assert model.differentiable is not None and model.components["text_encoder_3"] is not None
    assert model.weights_sha256 is not None
    condition = model.encode_prompts([PROMPT, ""])
    assert isinstance(condition, Sd3Condition) and len(condition) == 2
    assert condition.prompt_embeds.shape == (2, 77 + 256, 32) and condition.pooled.shape == (2, 64)
    with torch.no_grad():  # as StableDiffusion3Pipeline.__call__ runs it
        embeds, _, pooled, _ = sd3_pipeline(sd3).encode_prompt(
            [PROMPT, ""], None, None, do_classifier_free_guidance=False
        )
    assert torch.equal(condition.prompt_embeds, embeds) and torch.equal(condition.pooled, pooled)
    assert bool((condition.prompt_embeds[:, :77, 24:] == 0).all())  # CLIP's 8 + 16 columns padded to T5's 32


@pytest.mark.float_sensitive
@pytest.mark.parametrize("guidance", [7.0, 1.0])
def test_one_view_matches_stable_diffusion_3_pipeline(pipe, sd3, guidance):
    """One 256 px view (the native window) with CFG (g = 7, SD 3's default) and without (g = 1: one pass)."""
    ours = _run(pipe, height=256, width=256, guidance_scale=guidance, output_type="latent")
    expected = _diffusers(sd3, height=256, width=256, guidance_scale=guidance)
    assert ours.metadata.settings.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert ours.latents.shape == (1, 64, 16, 16) and expected.shape == (1, 16, 32, 32)
    assert expected.abs().max() > 1
    assert_close_scaled(pixel_shuffle(ours.latents, 2), expected, rel=REL_ONE_VIEW, what=f"one view, g={guidance}")


@pytest.mark.float_sensitive
def test_dynamic_shifting_uses_the_view_sequence_length(sd3):
    """A config with ``use_dynamic_shifting`` (as some SD 3.5 fine-tunes ship): μ from the view's 16 × 16 tokens,
    as the pipeline computes it from its image's."""
    scheduler = sd3_scheduler(use_dynamic_shifting=True, base_image_seq_len=64, max_image_seq_len=1024)
    c = {**sd3, "scheduler": scheduler}
    model = from_components(
        "dyn", c["transformer"], c["vae"], c["text_encoder"], c["tokenizer"], c["text_encoder_2"], c["tokenizer_2"],
        c["text_encoder_3"], c["tokenizer_3"], named_config(scheduler),
    )  # fmt: skip
    ours = _run(MultiDiffusionPipeline(model), height=256, width=256, output_type="latent")
    expected = _diffusers(c, height=256, width=256, guidance_scale=7.0)
    assert_close_scaled(pixel_shuffle(ours.latents, 2), expected, rel=REL_ONE_VIEW, what="dynamic shift, one view")


def test_timestep_options_pass_only_what_the_scheduler_takes():
    from diffusers import FlowMatchHeunDiscreteScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift as diffusers_shift

    dynamic = sd3_scheduler(use_dynamic_shifting=True, max_shift=1.2)
    options = make_timestep_options(named_config(dynamic))
    cfg = dynamic.config  # a 64 × 48-cell view is 3072 tokens
    expected = diffusers_shift(3072, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
    assert options(dynamic, 28, (64, 48)) == {"mu": pytest.approx(expected, rel=1e-12)}
    dynamic.set_timesteps(4, **options(dynamic, 4, (64, 48)))  # accepted
    assert options(sd3_scheduler(), 28, (64, 48)) == {}  # static shift: nothing, as the pipeline
    heun = FlowMatchHeunDiscreteScheduler.from_config(dynamic.config)  # no mu in its set_timesteps
    assert options(heun, 28, (64, 48)) == {}


@pytest.mark.float_sensitive
def test_canvas_matches_per_view_reference(pipe, sd3):
    """384 × 512 px = 24 × 32 cells, window 16, stride 8 cells: 2 rows × 3 columns of views, g = 5, 3 steps.

    The reference calls the diffusers transformer directly on the VAE layout with the pipeline's own prompt
    encoding, steps every view with its own FlowMatchEuler copy and averages (paper Eq. 5 on x_{t−1}): that
    fuse-then-step equals it is the proof that MultiDiffusion's fusion holds for flow matching's linear step."""
    guidance, steps = 5.0, 3
    ours = _run(
        pipe,
        height=384,
        width=512,
        window=256,
        stride=128,
        weights="uniform",  # the reference fuses with the paper's weights
        guidance_scale=guidance,
        output_type="latent",
    )
    ref_pipe = sd3_pipeline(sd3)
    embeds, neg_embeds, pooled, neg_pooled = ref_pipe.encode_prompt(PROMPT, None, None, negative_prompt="")
    embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])
    transformer = sd3["transformer"]

    def predict(crop, t, view):
        z = pixel_shuffle(crop, 2)  # canvas cells → the transformer's (1, 16, 2h, 2w)
        out = transformer(
            hidden_states=torch.cat([z, z]), timestep=t.expand(2), encoder_hidden_states=embeds,
            pooled_projections=pooled, return_dict=False,
        )[0]  # fmt: skip
        uncond, cond = out.chunk(2)
        return pixel_unshuffle(uncond + guidance * (cond - uncond), 2)

    scheduler = sd3_scheduler()
    scheduler.set_timesteps(steps)
    noise = torch.randn((1, 16, 48, 64), generator=torch.Generator().manual_seed(3))  # randn_tensor's draw
    views = layout_views(24, 32, 16, 8)
    assert len(views) == 6 and len({v.top for v in views}) == 2
    weights = view_weights(views, 24, 32, "uniform")
    expected = per_view_stepped(predict, scheduler, pixel_unshuffle(noise, 2), views, weights)
    assert expected.abs().max() > 1
    assert_close_scaled(ours.latents, expected, rel=REL_PER_VIEW, what="2×3 views vs per-view reference")


def test_a_view_output_does_not_depend_on_its_canvas_offset(model):
    """SD 3 crops its positional table around the centre for the input's size, so the same crop at two canvas
    offsets gives the same prediction (module docstring); a view larger than the table is one clear error."""
    denoiser = model.denoiser
    condition = model.encode_prompts([PROMPT])
    canvas = torch.randn((1, 64, 24, 32), generator=torch.Generator().manual_seed(0))
    crop = canvas[:, :, 2:18, 5:21]
    canvas[:, :, 8:24, 16:32] = crop  # the same content elsewhere on the canvas
    t = torch.tensor(800.0)
    at_a = denoiser(canvas[:, :, 2:18, 5:21], t, [condition], views=[View(2, 5, 16, 16)])
    at_b = denoiser(canvas[:, :, 8:24, 16:32], t, [condition], views=[View(8, 16, 16, 16)])
    assert torch.equal(at_a, at_b)
    embed = model.components["transformer"].pos_embed  # the mechanism: the table's centre 16 × 16 patches
    table = embed.pos_embed.reshape(48, 48, -1)
    assert torch.equal(embed.cropped_pos_embed(32, 32).reshape(16, 16, -1), table[16:32, 16:32])
    with pytest.raises(InvalidInputError, match=r"256×784 px exceeds .* table of 48×48 latent cells \(768 px\)"):
        denoiser(torch.zeros((1, 64, 16, 49)), t, [condition])


@pytest.mark.float_sensitive
def test_tiled_vae_decode_matches_whole(model):
    """The 16-channel VAE with SD 3's shift factor, decoded in 64 px tiles (48 tiles) ≡ one whole decode."""
    latents = torch.randn((1, 64, 24, 32), generator=torch.Generator().manual_seed(1))
    codec = model.codec
    assert codec.inner.shift_factor == pytest.approx(0.0609) and codec.inner.latent_channels == 16
    whole = codec.decode(latents)
    before = codec.tiled, codec.tile_px
    codec.tiled, codec.tile_px = True, 64
    try:
        assert codec.uses_tiling(1, 384, 512)
        tiled = codec.decode(latents)
    finally:
        codec.tiled, codec.tile_px = before
    assert whole.shape == (1, 3, 384, 512)
    assert_close_scaled(tiled, whole, rel=REL_TILED, what="tiled vs whole decode")


def test_regions_and_sync_run(pipe):
    regions = [
        Region("a red ball", box=(16, 16, 176, 176), name="ball"),
        Region("a blue cube", box=(208, 64, 368, 240), name="cube"),
    ]
    out = pipe.regions(
        regions, "a sandy beach", height=256, width=384, num_inference_steps=2, bootstrap_fraction=0.5,
        generator=torch.Generator().manual_seed(2), output_type="pt", progress=False,
    )  # fmt: skip
    assert out.images.shape == (1, 3, 256, 384) and bool(torch.isfinite(out.latents).all())
    synced = _run(pipe, height=256, width=384, num_inference_steps=2, sync=True, sync_loss="builtin", output_type="pt")
    assert synced.images.shape == (1, 3, 256, 384) and bool(torch.isfinite(synced.latents).all())
    plain = _run(pipe, height=256, width=384, num_inference_steps=2, output_type="latent")
    assert not torch.equal(plain.latents, synced.latents)  # the sync gradient moved the views


def test_cli_panorama_and_regions_on_the_folder(sd3_folder, tmp_path):
    out = tmp_path / "pano.png"
    args = ["--model", str(sd3_folder), "--steps", "2", "--seed", "1", "-q"]
    assert main(["panorama", "a prompt", *args, "--out", str(out), "--height", "256", "--width", "384"]) == 0
    image = Image.open(out)
    assert image.size == (384, 256)
    assert json.loads(image.text["multidiffusion"])["model"] == "tiny-sd3"
    layout = tmp_path / "layout.json"
    layout.write_text(
        json.dumps(
            {
                "width": 384,
                "height": 256,
                "background": "a sandy beach",
                "seed": 4,
                "regions": [
                    {"name": "ball", "prompt": "a red ball", "box": [16, 16, 176, 176]},
                    {"name": "sky", "prompt": "a blue sky", "box": [192, 0, 384, 128]},
                ],
            }
        )
    )
    regions_out = tmp_path / "regions.png"
    assert main(["regions", "--regions-file", str(layout), *args, "--out", str(regions_out)]) == 0
    assert Image.open(regions_out).size == (384, 256)


@pytest.mark.float_sensitive
def test_folder_without_t5_uses_zeros_and_matches_the_pipeline(tmp_path):
    """text_encoder_3 / tokenizer_3 null in model_index.json: loads (diffusers needs them passed as None), the
    T5 part of the sequence is zeros, and one view equals the pipeline without T5."""
    components = make_sd3_components(tmp_path / "parts", seed=1, with_t5=False)
    folder = save_sd3_folder(components, tmp_path / "no-t5")
    index = json.loads((folder / "model_index.json").read_text())
    assert absent_components(index) == dict.fromkeys(
        ("image_encoder", "feature_extractor", "text_encoder_3", "tokenizer_3")
    )
    model = load_model(str(folder), device="cpu")
    assert model.components["text_encoder_3"] is None
    condition = model.encode_prompts([PROMPT])
    assert condition.prompt_embeds.shape == (1, 77 + 256, 32) and bool((condition.prompt_embeds[:, 77:] == 0).all())
    ours = _run(MultiDiffusionPipeline(model), height=256, width=256, num_inference_steps=2, output_type="latent")
    expected = _diffusers(components, height=256, width=256, num_inference_steps=2, guidance_scale=7.0)
    assert_close_scaled(pixel_shuffle(ours.latents, 2), expected, rel=REL_ONE_VIEW, what="one view without T5")


def test_single_file_goes_through_the_sd3_adapter(sd3, sd3_folder, tmp_path, monkeypatch):
    """A checkpoint with SD 3's tensor names reaches ``load_single_file_pipeline("StableDiffusion3Pipeline", …)``
    with the config folder; a file diffusers cannot convert is one clear line."""
    from safetensors.torch import save_file

    import multidiffusion.adapters.families.sd3 as sd3_adapter

    path = tmp_path / "sd3_medium.safetensors"
    names = {
        "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": (9216,),
        "model.diffusion_model.pos_embed": (1, 36864, 1),
    }
    save_file({k: torch.zeros(s) for k, s in names.items()}, str(path))
    with pytest.raises(InvalidInputError, match="could not load checkpoint"):
        load_model(str(path), device="cpu", config=str(sd3_folder))

    calls = []

    def fake_load(class_name, checkpoint, dtype, config, **kwargs):
        calls.append((class_name, checkpoint, config, kwargs))
        return sd3_pipeline(sd3)

    monkeypatch.setattr(sd3_adapter, "load_single_file_pipeline", fake_load)
    loaded = load_model(str(path), device="cpu", config=str(sd3_folder))
    assert loaded.family == "sd3" and loaded.name == "sd3_medium.safetensors"
    assert calls == [
        (
            "StableDiffusion3Pipeline",
            str(path),
            str(sd3_folder),
            {"image_encoder": None, "feature_extractor": None},
        )
    ]


def test_a_prompt_past_the_clip_limit_warns_naming_clip_and_t5_limits(pipe):
    """SD 3 reads the prompt with two CLIPs (cut at 77 tokens) and T5 (cut at 256): the warning says which cut it."""
    import warnings

    common = dict(height=128, width=128, num_inference_steps=1, progress=False, output_type="latent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe("sky", **common)
        pipe("a" * 100, **common)
        pipe("b" * 300, **common)
    cut = [str(w.message) for w in caught if "tokens" in str(w.message)]
    assert len(cut) == 2
    assert cut[0].endswith(
        "is 102 tokens for CLIP; CLIP reads the first 77 (special tokens included) and cuts it there"
    )
    assert "tokens for CLIP and " in cut[1] and "tokens for T5; CLIP reads the first 77 and T5 the first 256" in cut[1]
