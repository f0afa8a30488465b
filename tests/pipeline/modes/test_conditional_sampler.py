"""The conditional sampler of outpaint, inpaint and a layout's init_image: the blend is bit-identical to a run without
one, the others are recorded, refused where their scheduler cannot run them, and run on every family's tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from multidiffusion import MultiDiffusionPipeline
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.conditional import ConditionalSampler
from multidiffusion.pipeline.inputs.region_file import load_region_file
from multidiffusion.pipeline.modes.image_start import ImageStart, check_image_start
from tests.helpers.family_folders import save_family_folders

IMAGE = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def toy() -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline.from_pretrained("toy")


def _outpaint(pipe: MultiDiffusionPipeline, sampler: ConditionalSampler | None, **kwargs):
    options = {"num_inference_steps": 6, "window": 32, "stride": 8, "feather": 0.0, "scheduler": "ddim", **kwargs}
    return pipe.outpaint(
        IMAGE, "blue", left=16, right=16, conditional=sampler, generator=torch.Generator().manual_seed(0),
        output_type="latent", progress=False, **options,
    )  # fmt: skip


def test_blend_is_bit_identical_to_no_sampler_and_records_nothing(toy: MultiDiffusionPipeline) -> None:
    plain = _outpaint(toy, None)
    blend = _outpaint(toy, ConditionalSampler("blend"))
    assert torch.equal(plain.latents, blend.latents)
    assert "conditional" not in json.loads(blend.metadata.to_json())["image"]


@pytest.mark.parametrize(
    ("sampler", "record"),
    [
        (ConditionalSampler("repaint", 2, 0.5), {"conditional": "repaint", "passes": 2, "fraction": 0.5}),
        (ConditionalSampler("ddnm"), {"conditional": "ddnm", "passes": 1, "fraction": 1.0}),
        (
            ConditionalSampler("tweedie", iterations=2),
            {"conditional": "tweedie", "passes": 1, "fraction": 1.0, "iterations": 2},
        ),
    ],
)
def test_other_samplers_keep_the_image_and_are_recorded(toy: MultiDiffusionPipeline, sampler, record) -> None:
    out = _outpaint(toy, sampler)
    assert torch.equal(out.latents[0, :, :, 16:48], IMAGE * 2 - 1)  # identity codec, feather 0: kept bit for bit
    image_record = json.loads(out.metadata.to_json())["image"]
    assert {k: image_record[k] for k in record} == record


def test_a_multistep_scheduler_is_refused_for_resampling_in_one_line(toy: MultiDiffusionPipeline) -> None:
    with pytest.raises(InvalidInputError, match="resampling cannot run with DPMSolverMultistepScheduler"):
        _outpaint(toy, ConditionalSampler("repaint", 2), scheduler="dpmpp_2m")
    _outpaint(toy, ConditionalSampler("tweedie", iterations=1), scheduler="dpmpp_2m")  # no resampling: it runs


def test_inpaint_takes_the_sampler(toy: MultiDiffusionPipeline) -> None:
    mask = torch.zeros(32, 32)
    mask[8:20, 8:20] = 1.0
    kw = {"num_inference_steps": 4, "window": 32, "stride": 8, "output_type": "latent", "progress": False}
    outs = [
        toy.inpaint(IMAGE, mask, "blue", feather=0.0, conditional=c, generator=torch.Generator().manual_seed(0), **kw)
        for c in (None, ConditionalSampler("repaint", 2))
    ]
    kept = mask == 0
    for out in outs:
        assert torch.equal(out.latents[0][:, kept], (IMAGE * 2 - 1)[:, kept])
    assert not torch.equal(outs[0].latents, outs[1].latents)


def test_a_layout_init_image_takes_a_sampler(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "photo.png")
    layouts = {
        "name.json": {"path": "photo.png", "conditional": "repaint"},
        "object.json": {"path": "photo.png", "conditional": {"name": "tweedie", "iterations": 4, "fraction": 0.5}},
    }
    for name, init in layouts.items():
        (tmp_path / name).write_text(json.dumps({"width": 96, "height": 40, "background": "x", "init_image": init}))
    assert load_region_file(tmp_path / "name.json").image.conditional == ConditionalSampler("repaint", 10)
    expected = ConditionalSampler("tweedie", fraction=0.5, iterations=4)
    assert load_region_file(tmp_path / "object.json").image.conditional == expected
    for init, message in (
        ({"path": "photo.png", "conditional": "dps"}, "unknown conditional sampler 'dps'"),
        ({"path": "photo.png", "conditional": {"name": "repaint", "jumps": 3}}, "unknown key init_image.conditional"),
        ({"path": "photo.png", "conditional": 3}, "init_image.conditional must be a sampler's name"),
    ):
        (tmp_path / "bad.json").write_text(
            json.dumps({"width": 96, "height": 40, "background": "x", "init_image": init})
        )
        with pytest.raises(InvalidInputError, match=message):
            load_region_file(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory, small_folder: Path) -> dict[str, Path]:
    return {"sd": small_folder, **save_family_folders(tmp_path_factory.mktemp("families"))}


@pytest.mark.heavy
@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_every_familys_tiny_model_runs_the_samplers(families: dict[str, Path], family: str) -> None:
    """Tweedie and RePaint through each family's real UNet or transformer, VAE and scheduler (SD and SDXL with
    Euler, SD 3 and Flux with their flow-matching Euler); the blend equals no sampler bit for bit."""
    pipe = MultiDiffusionPipeline.from_pretrained(str(families[family]), device="cpu", dtype="float32")
    g = pipe.model.granularity_px
    image = torch.rand(3, 2 * g, 2 * g, generator=torch.Generator().manual_seed(1))
    scheduler = "euler" if family in ("sd", "sdxl") else "flow_euler"

    def run(sampler: ConditionalSampler | None) -> torch.Tensor:
        return pipe.outpaint(
            image, "a field", left=2 * g, feather=0.0, conditional=sampler, scheduler=scheduler,
            num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
            output_type="latent", progress=False,
        ).latents  # fmt: skip

    plain = run(None)
    assert torch.equal(plain, run(ConditionalSampler("blend")))
    for sampler in (ConditionalSampler("tweedie", iterations=2), ConditionalSampler("repaint", 2)):
        out = run(sampler)
        assert out.shape == plain.shape and bool(torch.isfinite(out).all())
        assert not torch.equal(out, plain)


def test_an_inpainting_model_refuses_a_sampler_other_than_the_blend() -> None:
    """A 9-channel UNet sees the kept part through its own inputs and nothing is blended: a sampler would be ignored."""
    model = SimpleNamespace(inpaint_channels=5)
    known = torch.ones(1, 1, 8, 8)
    start = ImageStart(torch.zeros(1, 3, 8, 8), known, conditional=ConditionalSampler("repaint", 2))
    with pytest.raises(InvalidInputError, match="the repaint sampler does not run with an inpainting model"):
        check_image_start(start, model, 8, 8, sync=False)
    check_image_start(ImageStart(torch.zeros(1, 3, 8, 8), known, conditional=ConditionalSampler()), model, 8, 8, False)
