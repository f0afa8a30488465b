"""ControlNet and T2I-Adapter per view: one view ≡ diffusers' control pipelines; crops land where they belong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from multidiffusion.adapters import make_scheduler
from multidiffusion.adapters.customise.control import CONTROLNET, ControlledDenoiser, ControlUnit
from multidiffusion.core import layout_views
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.customise.control_spec import ControlSpec, fit_image
from multidiffusion.pipeline.customise.customisation import Customisation
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.tiny_control import guide_image, save_network, tiny_adapter, tiny_controlnet
from tests.helpers.tiny_models import loaded
from tests.helpers.tiny_sdxl import make_sdxl_components

# Relative to max|expected| (tests/helpers/numerics.py): 4 steps of the tiny UNet with a ControlNet (or two) and CFG,
# ours and diffusers' on the same components; latents |x| ≈ 20–80. Worst measured 4e-7 on AVX2 and AVX-512 kernels.
REL_REFERENCE = 1e-5
PROMPT = "a castle on a hill"
STEPS = 4


def _one_view(pipe: MultiDiffusionPipeline, size: int, custom: Customisation, **kwargs: Any) -> torch.Tensor:
    return pipe(
        PROMPT,
        height=size,
        width=size,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        progress=False,
        customise=custom,
        **kwargs,
    ).latents


@pytest.fixture(scope="module")
def nets(tiny: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tiny ControlNets and a T2I-Adapter for the tiny SD UNet, saved as diffusers folders."""
    root = tmp_path_factory.mktemp("control")
    first, second = tiny_controlnet(tiny["unet"], seed=1), tiny_controlnet(tiny["unet"], seed=2)
    adapter = tiny_adapter((16, 32), seed=3)
    return {
        "first": first,
        "second": second,
        "adapter": adapter,
        "first_dir": save_network(first, root / "cn-one"),
        "second_dir": save_network(second, root / "cn-two"),
    }


def _reference_latents(ref: Any, image: Any, size: int, guidance_scale: float = 7.5, **settings: Any) -> torch.Tensor:
    """diffusers' pipeline ``ref`` on one view of ``size`` px with the guide ``image`` (seed 3, as ours)."""
    return ref(
        PROMPT,
        image=image,
        height=size,
        width=size,
        num_inference_steps=STEPS,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        **settings,
    ).images


def _sd_reference(tiny: dict[str, Any], cls_name: str, **parts: Any) -> Any:
    import diffusers

    components = {k: tiny[k] for k in ("unet", "vae", "text_encoder", "tokenizer")}
    pipe = getattr(diffusers, cls_name)(
        **components,
        scheduler=make_scheduler("ddim", tiny["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **parts,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.float_sensitive
def test_one_view_matches_diffusers_controlnet_pipeline(tiny, tiny_pipe, nets):
    """Scale 0.8 acting from 25 % to 75 % of the steps: diffusers' conditioning scale and controlnet_keep."""
    image = guide_image(512, 512)
    expected = _reference_latents(
        _sd_reference(tiny, "StableDiffusionControlNetPipeline", controlnet=nets["first"]),
        image,
        512,
        controlnet_conditioning_scale=0.8,
        control_guidance_start=0.25,
        control_guidance_end=0.75,
    )
    custom = Customisation(control=(ControlSpec(str(nets["first_dir"]), image, 0.8, 0.25, 0.75),))
    ours = _one_view(tiny_pipe, 512, custom)
    plain = _one_view(tiny_pipe, 512, Customisation())
    assert_close_scaled(ours, expected, rel=REL_REFERENCE, what="ControlNet: ours vs diffusers")
    assert (plain - expected).abs().max() > 100 * REL_REFERENCE * expected.abs().max()  # the control mattered


@pytest.mark.heavy
@pytest.mark.float_sensitive
def test_two_controlnets_match_diffusers_multi_controlnet(tiny, tiny_pipe, nets):
    images = [guide_image(512, 512, seed=5), guide_image(512, 512, seed=6)]
    expected = _reference_latents(
        _sd_reference(tiny, "StableDiffusionControlNetPipeline", controlnet=[nets["first"], nets["second"]]),
        images,
        512,
        controlnet_conditioning_scale=[0.7, 1.3],
        control_guidance_start=[0.0, 0.5],
        control_guidance_end=[1.0, 1.0],
    )
    custom = Customisation(
        control=(
            ControlSpec(str(nets["first_dir"]), images[0], 0.7),
            ControlSpec(str(nets["second_dir"]), images[1], 1.3, start=0.5),
        )
    )
    assert_close_scaled(_one_view(tiny_pipe, 512, custom), expected, rel=REL_REFERENCE, what="two ControlNets")


def _adapter_unet(seed: int = 5) -> Any:
    """A tiny UNet whose first down block has cross-attention, as SD's: T2I-Adapter features enter inside it."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    from tests.helpers.tiny_control import _randomise

    _randomise(unet, seed, std=0.1)
    return unet.eval()


@pytest.mark.float_sensitive
def test_one_view_matches_diffusers_t2i_adapter_pipeline(tiny, nets, tmp_path):
    """diffusers' SD adapter pipeline adds the adapter's features at every step (scale 0.9)."""
    from multidiffusion.adapters.families.sd import from_components

    unet = _adapter_unet()
    adapter_dir = save_network(nets["adapter"], tmp_path / "t2i")
    image = guide_image(128, 128, seed=7)
    expected = _reference_latents(
        _sd_reference({**tiny, "unet": unet}, "StableDiffusionAdapterPipeline", adapter=nets["adapter"]),
        image,
        128,
        adapter_conditioning_scale=0.9,
    )
    model = from_components("t2i", unet, tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny["scheduler"].config)
    pipe = MultiDiffusionPipeline(model)
    ours = _one_view(pipe, 128, Customisation(control=(ControlSpec(str(adapter_dir), image, 0.9),)))
    plain = _one_view(pipe, 128, Customisation())
    assert_close_scaled(ours, expected, rel=REL_REFERENCE, what="T2I-Adapter: ours vs diffusers")
    assert (plain - expected).abs().max() > 100 * REL_REFERENCE * expected.abs().max()


@pytest.mark.float_sensitive
def test_sdxl_one_view_matches_diffusers_sdxl_controlnet_pipeline(tmp_path):
    from diffusers import StableDiffusionXLControlNetPipeline

    from multidiffusion.adapters.families.sdxl import from_components

    c = make_sdxl_components(tmp_path)
    net = tiny_controlnet(c["unet"], seed=4)
    folder = save_network(net, tmp_path / "cn-xl")
    image = guide_image(128, 128, seed=8)
    ref = StableDiffusionXLControlNetPipeline(**c, controlnet=net, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    expected = _reference_latents(ref, image, 128, guidance_scale=5.0, controlnet_conditioning_scale=0.6)
    model = from_components(
        "tiny-sdxl", c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["text_encoder_2"], c["tokenizer_2"],
        c["scheduler"].config,
    )  # fmt: skip
    ours = MultiDiffusionPipeline(model)(
        PROMPT,
        height=128,
        width=128,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        scheduler="euler",
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        progress=False,
        customise=Customisation(control=(ControlSpec(str(folder), image, 0.6),)),
    ).latents
    assert_close_scaled(ours, expected, rel=REL_REFERENCE, what="SDXL ControlNet: ours vs diffusers")


def _marker_pair(height: int, width: int, centre: tuple[int, int], radius: int = 6) -> tuple[Any, Any]:
    """Two guide images, identical but for a white square at ``centre`` (px) in the second."""
    from PIL import Image

    base = np.full((height, width, 3), 40, dtype=np.uint8)
    marked = base.copy()
    y, x = centre
    marked[y - radius : y + radius, x - radius : x + radius] = 255
    return Image.fromarray(base), Image.fromarray(marked)


def test_control_crop_changes_only_the_views_that_hold_the_marker(small, nets_small):
    """A 2×3-view canvas (window 16 cells, stride 8: 24×32 cells = 192×256 px): every view's denoised output with and
    without a marker in the guide image. Views that do not hold the marker's pixels give bit-identical outputs;
    those that do differ, most near the marker's place in the view."""
    model = loaded(small)
    views = layout_views(24, 32, 16, 8)
    assert len(views) == 6
    centre = (40, 200)  # px: row 5, column 25 (cells), inside the views starting at column 8 and 16 of the top row
    plain, marked = _marker_pair(192, 256, centre)
    torch.manual_seed(0)
    x = torch.randn(len(views), 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    text = model.encode_prompts([PROMPT])
    outputs = []
    for image in (plain, marked):
        spec = ControlSpec(str(nets_small), image)
        from multidiffusion.pipeline.customise.control_spec import ControlLoader

        unit = ControlLoader(model, False).unit(spec, 192, 256)
        denoiser = model.control([unit])
        denoiser.set_timesteps([500])
        outputs.append(denoiser(x, t, [text] * len(views), views=views))
    cy, cx = centre[0] // 8, centre[1] // 8
    for k, view in enumerate(views):
        holds = view.top - 1 <= cy <= view.top + view.height and view.left - 1 <= cx <= view.left + view.width
        diff = (outputs[1][k] - outputs[0][k]).abs().sum(dim=0)
        if not holds:
            assert torch.equal(outputs[1][k], outputs[0][k]), f"view {k} {view} changed"
        else:
            assert diff.max() > 0, f"view {k} {view} holds the marker but did not change"
            row, col = divmod(int(diff.argmax()), diff.shape[1])
            # the strongest change lies within a few cells of the marker's place in this view
            assert abs(row - (cy - view.top)) <= 4 and abs(col - (cx - view.left)) <= 4, (k, row, col)


@pytest.fixture(scope="module")
def nets_small(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_network(tiny_controlnet(small["unet"], seed=9), tmp_path_factory.mktemp("cn-small") / "cn")


def test_marker_changes_the_canvas_only_under_the_views_that_hold_it(small_pipe, nets_small):
    """One step on the 2×3-view canvas: the canvas changes only inside the union of views holding the marker, and
    most near it."""
    centre = (40, 200)
    plain, marked = _marker_pair(192, 256, centre)
    out = []
    for image in (plain, marked):
        out.append(
            small_pipe(
                PROMPT,
                height=192,
                width=256,
                stride=64,
                num_inference_steps=1,
                generator=torch.Generator().manual_seed(1),
                output_type="latent",
                progress=False,
                customise=Customisation(control=(ControlSpec(str(nets_small), image),)),
            ).latents
        )
    diff = (out[1] - out[0]).abs()[0].sum(dim=0)
    cy, cx = centre[0] // 8, centre[1] // 8
    holding = [v for v in layout_views(24, 32, 16, 8) if v.left <= cx < v.left + v.width and v.top <= cy < v.top + 16]
    inside = torch.zeros_like(diff, dtype=torch.bool)
    for v in holding:
        inside[v.top : v.top + v.height, v.left : v.left + v.width] = True
    assert diff[~inside].max() == 0 and diff[inside].max() > 0
    row, col = divmod(int(diff.argmax()), diff.shape[1])
    assert abs(row - cy) <= 4 and abs(col - cx) <= 4


def test_region_control_acts_on_that_regions_views_only(small_pipe, nets_small):
    """A region in the left half with its own ControlNet: one step changes nothing right of the views holding it."""
    image = guide_image(128, 384, seed=11)
    kwargs = dict(
        height=128,
        width=384,
        num_inference_steps=1,
        output_type="latent",
        progress=False,
        bootstrap_fraction=0.0,
    )
    with_control = Region("a tower", box=(0, 0, 128, 128), control=(ControlSpec(str(nets_small), image),))
    without = Region("a tower", box=(0, 0, 128, 128))
    a, b = (
        small_pipe.regions([r], background="a field", generator=torch.Generator().manual_seed(2), **kwargs).latents
        for r in (with_control, without)
    )
    diff = (a - b).abs()[0].sum(dim=0)
    # The region's own task has weight only on its box (cells 0–15): one step changes those cells and no other.
    assert diff[:, :16].min() > 0
    assert diff[:, 16:].max() == 0


def test_fit_modes_keep_the_canvas_size_and_aspect():
    image = torch.linspace(-1, 1, 3 * 20 * 40).reshape(1, 3, 20, 40)
    for mode in ("stretch", "crop", "pad"):
        assert fit_image(image, 32, 32, mode).shape == (1, 3, 32, 32)
    padded = fit_image(image, 32, 32, "pad")
    # 32×16 inside, black above and below
    assert torch.all(padded[..., :8, :] == -1) and torch.all(padded[..., 24:, :] == -1)


def _refused(pipe: MultiDiffusionPipeline, spec: ControlSpec, message: str) -> None:
    """One 128-px step with ``spec`` raises the project's input error: one line matching ``message``."""
    with pytest.raises(InvalidInputError, match=message) as info:
        pipe(PROMPT, height=128, width=128, num_inference_steps=1, progress=False,
             customise=Customisation(control=(spec,)))  # fmt: skip
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(scale=float("nan")), "scale must be a finite number"),
        (dict(scale=-1.0), "scale must be in"),
        (dict(start=0.8, end=0.2), "start < end"),
        (dict(resize="squash"), "resize must be one of"),
    ],
)
def test_bad_settings_are_one_line(small_pipe, nets_small, spec, message):
    _refused(small_pipe, ControlSpec(str(nets_small), guide_image(128, 128), **spec), message)


def test_bad_networks_are_one_line(small_pipe, tmp_path, tiny):
    image = guide_image(128, 128)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.safetensors").write_bytes(b"x")
    other = save_network(tiny_controlnet(make_sdxl_components(tmp_path)["unet"]), tmp_path / "xl")
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "empty"): "no readable config.json",
        str(tmp_path / "file.safetensors"): "single file",
        str(other): "made for another model",
    }
    for source, message in cases.items():
        _refused(small_pipe, ControlSpec(source, image), message)


def test_pickled_control_network_needs_allow_pickle(small_pipe, small, tmp_path):
    folder = tmp_path / "cn-bin"
    tiny_controlnet(small["unet"]).save_pretrained(folder, safe_serialization=False)
    spec = ControlSpec(str(folder), guide_image(128, 128))
    with pytest.raises(InvalidInputError, match="--allow-pickle"):
        small_pipe(PROMPT, height=128, width=128, num_inference_steps=1, progress=False,
                   customise=Customisation(control=(spec,)))  # fmt: skip
    out = small_pipe(PROMPT, height=128, width=128, num_inference_steps=1, progress=False, output_type="latent",
                     customise=Customisation(control=(spec,), allow_pickle=True))  # fmt: skip
    assert out.metadata.settings.customisation["control"][0]["model"] == "cn-bin"


def test_sync_with_control_is_refused_before_loading(small_pipe, nets_small):
    with pytest.raises(InvalidInputError, match="sync cannot be combined"):
        small_pipe(PROMPT, height=128, width=256, num_inference_steps=1, progress=False, sync=True,
                   customise=Customisation(control=(ControlSpec(str(nets_small), guide_image(128, 256)),)))  # fmt: skip


def test_units_outside_their_steps_are_not_called(small, nets_small):
    """start/end: the network runs only on the steps it acts on (diffusers calls it at scale 0 instead)."""
    model = loaded(small)
    from multidiffusion.adapters.customise.control_loading import load_control_network

    network, kind = load_control_network(str(nets_small), torch.float32, torch.device("cpu"))
    assert kind == CONTROLNET
    calls = []
    network.register_forward_hook(lambda *_: calls.append(1))
    unit = ControlUnit(network, kind, torch.zeros(1, 3, 128, 128), 1.0, 0.5, 1.0)
    denoiser = model.control([unit])
    assert isinstance(denoiser, ControlledDenoiser)
    denoiser.set_timesteps([900, 600, 300, 0])
    x = torch.zeros(1, 4, 16, 16)
    text = model.encode_prompts([PROMPT])
    view = layout_views(16, 16, 16, 8)[:1]
    for t in (900, 600, 300, 0):
        denoiser(x, torch.tensor(t), [text], views=view)
    assert len(calls) == 2


def test_a_control_network_loads_once_for_consecutive_runs(small_pipe, nets_small, monkeypatch):
    """The next run naming the same ControlNet reuses the loaded one (no second read of its folder); a run without
    control frees it."""
    from multidiffusion.pipeline.customise import control_spec as control_module

    loads: list[str] = []
    original = control_module.load_control_network
    monkeypatch.setattr(
        control_module,
        "load_control_network",
        lambda source, *a, **k: loads.append(source) or original(source, *a, **k),
    )
    custom = Customisation(control=(ControlSpec(str(nets_small), guide_image(128, 128)),))
    kwargs = dict(height=128, width=128, num_inference_steps=1, progress=False, output_type="latent")
    first = small_pipe(PROMPT, generator=torch.Generator().manual_seed(1), customise=custom, **kwargs).latents
    again = small_pipe(PROMPT, generator=torch.Generator().manual_seed(1), customise=custom, **kwargs).latents
    assert loads == [str(nets_small)] and torch.equal(first, again)
    small_pipe(PROMPT, **kwargs)
    assert small_pipe.customisation_cache.control_networks == {}
