"""The sphere mode through the pipeline (docs/sphere.md): an H × 2H equirectangular image, its recipe, its refusals."""

from __future__ import annotations

import json

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.settings.recipe_schema import check_recipe
from multidiffusion.pipeline.settings.reproduce import read_recipe
from multidiffusion.pipeline.settings.sphere import SphereSettings, sphere_arguments

pytestmark = pytest.mark.usefixtures("one_thread")

HEIGHT = 80  # px = cells for the toy model: views of its 64-px window at about 112°


@pytest.fixture(scope="module")
def toy():
    return MultiDiffusionPipeline.from_pretrained("toy", device="cpu")


@pytest.fixture(scope="module")
def run(toy):
    return toy.sphere(
        ["a blue sky", "sea"],
        height=HEIGHT,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(7),
        progress=False,
    )


def test_a_sphere_is_an_equirectangular_image_twice_as_wide_as_high(run):
    assert [image.size for image in run.images] == [(2 * HEIGHT, HEIGHT)] * 2
    assert tuple(run.latents.shape) == (2, 3, HEIGHT, 2 * HEIGHT)
    assert run.metadata.mode == "sphere"
    fov = run.metadata.settings.sphere.fov
    assert 100 < fov < 120  # chosen from the height (docs/sphere.md, "Density")


def test_the_recipe_records_the_sphere_and_reproduces_it_bit_identically(toy, run, tmp_path):
    record = json.loads(run.metadata.to_json())
    assert record["mode"] == "sphere" and record["width"] == 2 * HEIGHT and record["tile"] == "x"
    assert {k: record[k] for k in ("sphere_overlap", "sphere_weights", "sphere_pole_roll")} == {
        "sphere_overlap": 0.5,
        "sphere_weights": "gaussian",
        "sphere_pole_roll": 0.0,
    }
    assert check_recipe(record)["sphere_fov"] == run.metadata.settings.sphere.fov
    path = tmp_path / "sphere.png"
    run.save(path, index=1)
    again = toy.sphere(**sphere_arguments(read_recipe(path)), output_type="latent", progress=False)
    assert torch.equal(again.latents, run.latents)
    reproduced = toy.reproduce(read_recipe(path), progress=False)  # what `multidiffusion reproduce` calls
    assert reproduced.metadata.mode == "sphere" and torch.equal(reproduced.latents, run.latents)
    assert "Sphere: fov" in run.metadata.to_a1111()


def test_a_given_fov_that_fits_the_height_is_kept(toy, run):
    fov = run.metadata.settings.sphere.fov
    out = toy.sphere(
        "sea",
        height=HEIGHT,
        num_inference_steps=1,
        sphere=SphereSettings(fov=round(fov, 1)),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        progress=False,
    )
    assert out.metadata.settings.sphere.fov == round(fov, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"sphere": SphereSettings(fov=60.0)},
            r"duplicated noise; for this height use fov 1\d\d\.\d°.*a height of \d+ px",
        ),
        ({"height": 40}, r"needs views of \d+°, outside 30…120°; choose a height of \d+…\d+ px"),
        ({"sync": SyncSettings()}, "SyncDiffusion is not available on the sphere"),
        ({"global_view": 0.5}, "global view is not available on the sphere"),
    ],
)
def test_what_the_sphere_cannot_do_is_refused_in_one_line(toy, kwargs, match):
    args = {"height": HEIGHT, "num_inference_steps": 1, "progress": False, **kwargs}
    with pytest.raises(InvalidInputError, match=match) as caught:
        toy.sphere("sea", **args)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fov": 10.0}, "fov must be 30…120"),
        ({"fov": float("nan")}, "fov must be"),
        ({"overlap": 0.95}, "overlap"),
        ({"weights": "box"}, "unknown weights"),
        ({"pole_roll": float("inf")}, "pole roll"),
    ],
)
def test_sphere_settings_are_checked_when_made(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        SphereSettings(**kwargs)


def test_a_sphere_recipe_must_be_twice_as_wide_as_high(run):
    record = json.loads(run.metadata.to_json())
    with pytest.raises(InvalidInputError, match="twice its height"):
        check_recipe({**record, "width": HEIGHT})
    with pytest.raises(InvalidInputError, match="not a sphere"):
        sphere_arguments({**{k: v for k, v in record.items() if not k.startswith("sphere_")}, "mode": "panorama"})


def test_a_stable_diffusion_model_draws_a_sphere_through_its_vae(small_pipe):
    """Any family: the views are whole images of the native window (128 px here); the decode wraps in longitude."""
    out = small_pipe.sphere(
        "a lake",
        height=224,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert out.images[0].size == (448, 224)
    assert tuple(out.latents.shape[-2:]) == (28, 56)
    assert out.metadata.settings.views.tile == "x"


def test_photo_to_360_keeps_the_photo_bit_for_bit(toy):
    """A photo placed on the sphere (plan_photo_sphere) is kept exactly where it lands (feather 0, identity codec),
    and the rest of the sphere is drawn."""
    import numpy as np

    photo = np.random.default_rng(0).integers(0, 256, (48, 64, 3)).astype(np.uint8)
    start = toy.plan_photo_sphere(photo, HEIGHT, 90.0, yaw=30.0, pitch=10.0, feather=0)
    out = toy.sphere("sky", height=HEIGHT, num_inference_steps=3, image=start, output_type="latent", progress=False)
    known = start.known[0, 0] == 1
    assert 0.05 < float(known.float().mean()) < 0.2
    assert torch.equal(out.latents[0][:, known], start.image[0][:, known])
    assert float(out.latents[0][:, ~known].std()) > 0.05  # drawn
    record = out.metadata.settings.image
    assert (record["mode"], record["fov"], record["yaw"], record["pitch"]) == ("photo-sphere", 90.0, 30.0, 10.0)
