"""SD 3 and Flux ControlNets per view: one view ≡ diffusers' ControlNet pipelines; crops land where they belong."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.customise.control_spec import ControlSpec
from multidiffusion.pipeline.customise.customisation import Customisation
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.tiny_control import _randomise, guide_image, save_network

# Relative to max|expected| (tests/helpers/numerics.py): 3 flow steps of the tiny transformers with a ControlNet, ours
# and diffusers' on the same components (the guide encoded with the VAE's mean in both). Worst measured: see the note of
# each test; bounds leave ≥ 10×.
REL_REFERENCE = 1e-5
PROMPT = "a castle on a hill"
STEPS = 3


@pytest.fixture()
def vae_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' SD 3 ControlNet pipeline encodes the guide with ``latent_dist.sample()`` from the global RNG; ours
    uses the mean. Both read the mean here."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())


def _sd3_controlnet(transformer: Any, seed: int, **config: Any) -> Any:
    """A one-block SD 3 ControlNet shaped like the tiny transformer (every weight random)."""
    from diffusers import SD3ControlNetModel

    keys = ("sample_size", "patch_size", "in_channels", "attention_head_dim", "num_attention_heads")
    keys += ("caption_projection_dim", "joint_attention_dim", "pooled_projection_dim", "out_channels")
    shape = {k: transformer.config[k] for k in (*keys, "pos_embed_max_size")}
    net = SD3ControlNetModel(**shape, num_layers=1, **config)
    _randomise(net, seed)
    return net.eval()


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny SD 3 with a two-block transformer: ControlNet samples skip the last block (``context_pre_only``), so the
    suite's one-block transformer would ignore them."""
    from diffusers import SD3Transformer2DModel

    from tests.helpers.tiny_sd3 import make_sd3_components

    c = make_sd3_components(tmp_path_factory.mktemp("sd3-control"), seed=0, with_t5=False)
    transformer = SD3Transformer2DModel.from_config({**c["transformer"].config, "num_layers": 2})
    _randomise(transformer, seed=7, std=0.1)
    return {**c, "transformer": transformer.eval()}


def _sd3_model(c: dict[str, Any]) -> Any:
    from multidiffusion.adapters.families.sd3 import from_components, named_config

    keys = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    return from_components("tiny-sd3", *(c[k] for k in keys), None, None, named_config(c["scheduler"]))


@pytest.mark.float_sensitive
@pytest.mark.parametrize("instantx", [False, True], ids=["shifted", "instantx"])
def test_sd3_one_view_matches_diffusers_sd3_controlnet_pipeline(sd3, tmp_path, vae_mean, instantx):
    """Scale 0.7 from 1/3 of the steps; InstantX's ControlNets (zero pooled projections, no VAE shift) and others."""
    from diffusers import StableDiffusion3ControlNetPipeline

    net = _sd3_controlnet(sd3["transformer"], seed=5, force_zeros_for_pooled_projection=instantx)
    folder = save_network(net, tmp_path / "cn-sd3")
    image = guide_image(128, 128, seed=6)
    ref = StableDiffusion3ControlNetPipeline(**sd3, controlnet=net)
    ref.set_progress_bar_config(disable=True)
    expected = ref(
        PROMPT,
        control_image=image,
        height=128,
        width=128,
        num_inference_steps=STEPS,
        guidance_scale=7.0,
        controlnet_conditioning_scale=0.7,
        control_guidance_start=1 / 3,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
    ).images
    pipe = MultiDiffusionPipeline(_sd3_model(sd3))
    run = dict(height=128, width=128, num_inference_steps=STEPS, guidance_scale=7.0, output_type="latent")
    custom = Customisation(control=(ControlSpec(str(folder), image, 0.7, start=1 / 3),))
    ours = pipe(PROMPT, generator=torch.Generator().manual_seed(3), progress=False, customise=custom, **run).latents
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(3), progress=False, **run).latents
    # our canvas is packed 2 × 2; diffusers' latents are the VAE's layout
    from multidiffusion.adapters.codecs.packed import unpack

    ours = unpack(ours, 2)
    assert_close_scaled(
        ours, expected, rel=REL_REFERENCE, what=f"SD 3 ControlNet ({'InstantX' if instantx else 'shifted'})"
    )
    assert (unpack(plain, 2) - expected).abs().max() > 100 * REL_REFERENCE * expected.abs().max()


def test_sd_controlnet_on_sd3_is_one_line(sd3, small, tmp_path):
    from tests.helpers.tiny_control import tiny_controlnet

    folder = save_network(tiny_controlnet(small["unet"]), tmp_path / "cn-sd")
    pipe = MultiDiffusionPipeline(_sd3_model(sd3))
    custom = Customisation(control=(ControlSpec(str(folder), guide_image(128, 128)),))
    with pytest.raises(InvalidInputError, match="this model takes a SD 3 ControlNet") as info:
        pipe(PROMPT, height=128, width=128, num_inference_steps=1, progress=False, customise=custom)
    assert "\n" not in str(info.value)


@pytest.fixture()
def flux_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' Flux ControlNet pipeline encodes the guide with ``retrieve_latents`` (a sample); ours uses the mean.
    Both read the mean here (and the generator draws nothing for it)."""
    import diffusers.pipelines.flux.pipeline_flux_controlnet as module

    original = module.retrieve_latents
    monkeypatch.setattr(module, "retrieve_latents", lambda out, generator=None, sample_mode="sample": original(
        out, generator, sample_mode="argmax"))  # fmt: skip


def _flux_controlnet(transformer: Any, seed: int) -> Any:
    """A one-block (one double, one single) Flux ControlNet shaped like the tiny transformer, InstantX-style."""
    from diffusers import FluxControlNetModel

    config = transformer.config
    net = FluxControlNetModel(
        patch_size=config.patch_size,
        in_channels=config.in_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.joint_attention_dim,
        pooled_projection_dim=config.pooled_projection_dim,
        guidance_embeds=config.guidance_embeds,
        axes_dims_rope=list(config.axes_dims_rope),
    )
    _randomise(net, seed)
    return net.eval()


@pytest.mark.float_sensitive
def test_flux_one_view_matches_diffusers_flux_controlnet_pipeline(tmp_path, flux_mean):
    """Flux dev-style (guidance embedded, no unconditional pass): scale 0.8 until 2/3 of the steps."""
    from diffusers import FluxControlNetPipeline

    from tests.helpers.tiny_flux import T5_MAX_LENGTH, loaded_flux, make_flux_components

    c = make_flux_components(tmp_path, guidance_embeds=True)
    net = _flux_controlnet(c["transformer"], seed=8)
    folder = save_network(net, tmp_path / "cn-flux")
    image = guide_image(128, 128, seed=9)
    ref = FluxControlNetPipeline(**c, controlnet=net)
    ref.set_progress_bar_config(disable=True)
    settings = dict(height=128, width=128, num_inference_steps=STEPS, guidance_scale=3.5)
    expected = ref(
        PROMPT,
        control_image=image,
        controlnet_conditioning_scale=0.8,
        control_guidance_end=2 / 3,
        max_sequence_length=T5_MAX_LENGTH,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        **settings,
    ).images  # packed tokens (1, h·w, 64)
    pipe = MultiDiffusionPipeline(loaded_flux(c))
    custom = Customisation(control=(ControlSpec(str(folder), image, 0.8, end=2 / 3),))
    run = dict(generator=torch.Generator().manual_seed(3), progress=False, output_type="latent", **settings)
    from multidiffusion.adapters.codecs.packed import tokens

    ours = tokens(pipe(PROMPT, customise=custom, **run).latents)
    run["generator"] = torch.Generator().manual_seed(3)
    plain = tokens(pipe(PROMPT, **run).latents)
    assert_close_scaled(ours, expected, rel=REL_REFERENCE, what="Flux ControlNet")
    assert (plain - expected).abs().max() > 100 * REL_REFERENCE * expected.abs().max()


def _view_outputs(model: Any, folder: Any, images: Any, views: Any, x: torch.Tensor) -> list[torch.Tensor]:
    """Each guide's controlled denoiser output for every view (latents ``x``, one row per view; t = 500, one prompt)
    on a canvas of 128 × 256 px."""
    from multidiffusion.pipeline.customise.control_spec import ControlLoader

    height, width = 128, 256
    text = model.encode_prompts([PROMPT])
    if model.embed_guidance is not None:  # Flux dev: the guidance scale rides on the condition
        text = model.embed_guidance(text, 3.5)
    outputs = []
    for image in images:
        unit = ControlLoader(model, False).unit(ControlSpec(str(folder), image), height, width)
        denoiser = model.control([unit])
        denoiser.set_timesteps([500.0])
        outputs.append(denoiser(x, torch.tensor(500.0), [text] * len(views), views=views))
    return outputs


def test_sd3_guide_crops_follow_the_views(sd3, tmp_path):
    """Canvas of 8×16 cells (16 px), views of 8 cells at stride 4; the guide lives on the packed latent grid (the VAE's
    attention spreads a pixel change over the whole encoding, so the guide is changed on that grid directly): a change
    in cells 14–15 reaches the last view only; the others' outputs stay bit-identical."""
    from multidiffusion.adapters.customise.control import ControlUnit
    from multidiffusion.adapters.families.sd3 import SD3_CONTROLNET
    from multidiffusion.core import layout_views

    model = _sd3_model(sd3)
    net = _sd3_controlnet(sd3["transformer"], seed=5)
    views = layout_views(8, 16, 8, 4)
    assert [v.left for v in views] == [0, 4, 8]
    guide = torch.randn(1, 64, 8, 16, generator=torch.Generator().manual_seed(1))
    marked = guide.clone()
    marked[..., 14:] += 1.0
    x = torch.randn(len(views), 64, 8, 8, generator=torch.Generator().manual_seed(0))
    text = model.encode_prompts([PROMPT])
    outputs = []
    for image in (guide, marked):
        denoiser = model.control([ControlUnit(net, SD3_CONTROLNET, image, factor=1)])
        denoiser.set_timesteps([500.0])
        outputs.append(denoiser(x, torch.tensor(500.0), [text] * len(views), views=views))
    plain, changed = outputs
    assert torch.equal(plain[0], changed[0]) and torch.equal(plain[1], changed[1])
    assert not torch.equal(plain[2], changed[2])


def test_flux_canvas_position_ids_with_control_match_view_by_view(tmp_path):
    """Flux with canvas position ids groups rows by offset: a batch of views gives each view's own result."""
    from multidiffusion.core import layout_views
    from tests.helpers.tiny_flux import loaded_flux, make_flux_components

    c = make_flux_components(tmp_path, guidance_embeds=True)
    model = loaded_flux(c, position_ids="canvas")
    folder = save_network(_flux_controlnet(c["transformer"], seed=8), tmp_path / "cn-flux")
    views = layout_views(8, 16, 8, 4)
    guide = guide_image(128, 256, seed=2)
    x = torch.randn(len(views), 64, 8, 8, generator=torch.Generator().manual_seed(0))
    (batched,) = _view_outputs(model, folder, [guide], views, x)
    for k, view in enumerate(views):
        (alone,) = _view_outputs(model, folder, [guide], [view], x[k : k + 1])
        assert_close_scaled(batched[k], alone[0], rel=1e-5, what=f"view {k} batched vs alone")
