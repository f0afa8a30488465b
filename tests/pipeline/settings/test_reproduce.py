"""Regenerating an image from its PNG alone (issue item 13) and what the metadata records (item 14)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.interfaces.cli.main import main
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.cli import exit_code, pixels, recipe

TOY = ["--model", "toy", "--window", "32", "--stride", "8", "--steps", "4", "-q"]


def test_reproduce_panorama_on_the_toy_model_is_bit_identical(tmp_path):
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    argv = ["panorama", "red or blue", *TOY, "--height", "32", "--width", "96", "--scheduler", "dpmpp_2m"]
    assert main([*argv, "--tile", "x", "--sync", "--sync-stop-step", "2", "--out", str(first)]) == 0
    assert main(["reproduce", str(first), "--out", str(again), "-q"]) == 0
    assert pixels(again) == pixels(first)
    assert recipe(again) == recipe(first)


def test_reproduce_regions_with_masks_needs_no_mask_files(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    sun = np.zeros((32, 96), np.uint8)
    sun[4:20, 8:40] = 255
    Image.fromarray(sun).save(masks / "sun.png")
    soft = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (32, 1))
    Image.fromarray((soft * 255).round().astype(np.uint8)).save(masks / "sea.png")
    layout = {
        "width": 96,
        "height": 32,
        "background": "an orange sky",
        "regions": [
            {"name": "sun", "prompt": "a yellow sun", "mask": "masks/sun.png", "guidance_scale": 3.0},
            {"name": "sea", "prompt": "a dark blue sea", "mask": "masks/sea.png"},
        ],
    }
    (tmp_path / "layout.json").write_text(json.dumps(layout))
    out = tmp_path / "regions.png"
    argv = ["regions", "--regions-file", str(tmp_path / "layout.json"), *TOY, "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (out).rename(moved / "regions.png")
    for f in masks.iterdir():  # the masks travel inside the PNG
        f.unlink()
    again = tmp_path / "again.png"
    assert main(["reproduce", str(moved / "regions.png"), "--out", str(again), "-q"]) == 0
    assert pixels(again) == pixels(moved / "regions.png")
    text = Image.open(again).text["parameters"]
    # item 14: each prompt's own guidance scale, not only the default
    assert "Region CFG scales: an orange sky: 1; a yellow sun: 3; a dark blue sea: 1" in text


def test_reproduce_a_local_sd_model_by_folder(small_folder, tmp_path, capfd, monkeypatch):
    out, again = tmp_path / "sd.png", tmp_path / "sd2.png"
    argv = ["panorama", "a hill", "--model", str(small_folder), "--height", "128", "--width", "256"]
    assert main([*argv, "--steps", "2", "--scheduler", "euler", "--seed", "11", "--out", str(out), "-q"]) == 0
    meta = recipe(out)
    assert meta["model"] == small_folder.name and len(meta["model_sha256"]) == 64
    monkeypatch.chdir(tmp_path)  # the recorded name alone does not find the folder from here
    capfd.readouterr()
    assert exit_code(["reproduce", str(out), "--out", str(again), "-q"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "made with the local model 'tiny-sd'" in err and "--model" in err
    assert not again.exists()
    assert main(["reproduce", str(out), "--model", str(small_folder), "--out", str(again), "-q"]) == 0
    assert pixels(again) == pixels(out)


def test_reproduce_refuses_what_it_cannot_use(tmp_path, capfd):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert exit_code(["reproduce", str(plain), "--out", str(tmp_path / "x.png")]) == 2
    assert "carries no multidiffusion recipe" in capfd.readouterr().err
    assert exit_code(["reproduce", str(tmp_path / "none.png"), "--out", str(tmp_path / "x.png")]) == 2
    assert "cannot read image" in capfd.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert exit_code(["reproduce", str(plain), "--out", str(plain)]) == 2
    assert "different file than the image" in capfd.readouterr().err


def test_from_metadata_and_batches_in_python():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    result = pipe(
        ["sky", "grass"],
        height=32,
        width=64,
        window=32,
        stride=8,
        num_inference_steps=3,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(4),
        progress=False,
    )
    assert len(result.images) == 4 and result.metadata.settings.prompt == ("sky", "sky", "grass", "grass")
    assert json.loads(result.metadata.to_json(3))["image_index"] == 3
    again = MultiDiffusionPipeline.from_metadata(result.metadata.to_json(3)).reproduce(
        result.metadata.to_json(3), progress=False
    )
    assert torch.equal(again.latents, result.latents)
    with pytest.raises(InvalidInputError, match="no seed"):
        used = torch.Generator().manual_seed(1)
        torch.randn(1, generator=used)
        unseeded = pipe("sky", height=32, width=64, window=32, num_inference_steps=2, generator=used, progress=False)
        pipe.reproduce(unseeded.metadata)


def test_metadata_records_the_shifted_stride_and_no_paths():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    result = pipe("sky", height=32, width=128, layout="shifted", num_inference_steps=2, progress=False)
    assert result.metadata.settings.views.stride == result.metadata.settings.views.window == 64
    assert "MultiDiffusion stride: 64" in result.metadata.to_a1111()
    regions = pipe.regions(
        [Region("red", mask=Image.new("L", (64, 32), 255))],
        None,
        height=32,
        width=64,
        num_inference_steps=2,
        guidance_scale=2.0,
        progress=False,
    )
    record = regions.metadata.to_dict()["regions"][0]
    assert record["mask_size"] == [32, 64] and "mask_data" in record


def test_a_recipe_names_a_model_it_may_load_or_asks_for_model(tmp_path, monkeypatch):
    """Issue 31, item 12: only names that say what to load by themselves are loaded from a recipe."""
    from multidiffusion.pipeline.settings.reproduce import model_to_load

    monkeypatch.chdir(tmp_path)
    for name in ("toy", "toy:ell=3", "stabilityai/stable-diffusion-2-base"):
        assert model_to_load({"model": name}, None) == name
    (tmp_path / "tiny-sd").mkdir()
    (tmp_path / "owner" / "name").mkdir(parents=True)
    refused = {
        str(tmp_path / "tiny-sd"): "names its model by a path",
        "./tiny-sd": "names its model by a path",
        "../x": "names its model by a path",
        "~/models/x": "names its model by a path",
        "C:\\models\\x": "names its model by a path",
        "tiny-sd": "made with the local model 'tiny-sd'",  # a local name, even one that exists here
        "owner/name": "also a path here",
        "": "names no model",
        None: "names no model",
    }
    for recorded, message in refused.items():
        with pytest.raises(InvalidInputError, match=message) as info:
            model_to_load({"model": recorded}, None)
        assert "--model" in str(info.value) and "\n" not in str(info.value)
        assert model_to_load({"model": recorded}, "given") == "given"


@pytest.mark.parametrize(
    ("size", "extra", "window", "stride"),
    [
        ((32, 48), {}, 48, 16),  # smaller than the 64-px native window both ways: one view of the canvas
        ((32, 40), {"tile": "x", "global_view": 1.0}, 40, 16),  # wrapped, with a global view
        ((16, 24), {"stride": 32, "window": 64}, 24, 24),  # the stride at most the window used
        ((32, 96), {}, 64, 16),  # wider than the window: the window is used as asked
    ],
)
def test_the_window_recorded_is_the_one_the_canvas_used_and_reproduces(size, extra, window, stride):
    """The toy model's native window is 64 px; a canvas under it in both sides has one view of its own size, so
    that is the window recorded (and in the A1111 text), and a rerun with it makes the same views and pixels."""
    from multidiffusion.core.features.global_view import GlobalView
    from multidiffusion.pipeline.settings.views import ViewSettings

    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    views = ViewSettings(extra.get("window"), extra.get("stride"), tile=extra.get("tile"))
    gv = GlobalView(extra["global_view"]) if "global_view" in extra else None
    height, width = size
    out = pipe("a", height=height, width=width, num_inference_steps=3, views=views, global_view=gv,
               generator=torch.Generator().manual_seed(4), progress=False)  # fmt: skip
    record = out.metadata.to_dict()
    assert (record["window"], record["stride"]) == (window, stride)
    assert f"MultiDiffusion window: {window}," in out.metadata.to_a1111()
    again = pipe.reproduce(record, progress=False)  # runs with the recorded window and stride
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(out.images[0]))
    assert again.metadata.to_dict() == record


def test_a_recipe_of_the_requested_window_compares_equal_as_used():
    """A recipe written before the window used was recorded (window 64 on a 32 × 48 canvas) is the same run."""
    from multidiffusion.pipeline.settings.recipe import as_used

    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    out = pipe("a", height=32, width=48, num_inference_steps=2, progress=False, output_type="latent",
               generator=torch.Generator().manual_seed(1))  # fmt: skip
    new = out.metadata.to_dict()
    old = {**new, "window": 64, "stride": 16}
    assert new["window"] == 48 and as_used(old) == new and as_used(new) == new
    assert as_used({**new, "layout": "shifted", "window": 64})["window"] == 64  # a layout's window is its own
