"""``multidiffusion upscale``, ``outpaint`` and ``inpaint`` end to end on the toy model: the size of what they write,
the pixels they keep, and the recipe each PNG records (bad input is in test_bad_input.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli import exit_code, one_error_line, pixels, recipe

TOY = ["--model", "toy", "--steps", "3", "--window", "32", "--stride", "8", "-q"]
W, H = 48, 32  # the input picture, px


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 48×32 px RGB picture with structure at every scale (gradients and noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x * 255 / W, y * 255 / H, (x + y) * 255 / (W + H)], axis=-1)
    array = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def mask(tmp_path: Path) -> Path:
    """White (redraw) on a 24×16 px box in the middle of the picture, black (keep) elsewhere."""
    array = np.zeros((H, W), np.uint8)
    array[8:24, 12:36] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(array).save(path)
    return path


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def record_of(path: Path) -> dict:
    return {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_upscale_writes_the_enlargement_with_its_recipe(photo, tmp_path):
    out = tmp_path / "big.png"
    argv = ["upscale", str(photo), "--scale", "2", "--strength", "0.5", "--prompt", "sky", "--seed", "5", *TOY]
    assert exit_code([*argv, "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (2 * W, 2 * H)
        assert "Denoising strength: 0.5" in image.text["parameters"] and "Seed: 5" in image.text["parameters"]
    meta = recipe(out)
    assert meta["mode"] == "upscale" and meta["seed"] == 5 and meta["prompt"] == ["sky"]
    assert (meta["width"], meta["height"], meta["num_inference_steps"]) == (2 * W, 2 * H, 3)
    assert meta["image"]["input"] == record_of(photo)  # the file's own name, never its folder
    assert str(tmp_path) not in json_text(out)
    expected = {"scale": 2.0, "strength": 0.5, "resample": "lanczos", "noise_inversion_steps": 0}
    assert {k: meta["image"][k] for k in expected} == expected
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("photo.png", "big.png")]  # no temporary file

    again = tmp_path / "again.png"
    assert exit_code([*argv, "--out", str(again)]) == 0
    assert pixels(again) == pixels(out)  # the recorded settings and seed make it again


def json_text(path: Path) -> str:
    with Image.open(path) as image:
        return image.text["multidiffusion"] + image.text["parameters"]


@pytest.mark.parametrize(("resample", "scale", "size"), [("lanczos", "2", (96, 64)), ("nearest", "1.5", (72, 48))])
def test_upscale_at_strength_0_is_the_resized_input(photo, tmp_path, resample, scale, size):
    out = tmp_path / "big.png"
    argv = ["upscale", str(photo), "--scale", scale, "--strength", "0", "--resample", resample, *TOY]
    assert exit_code([*argv, "--out", str(out)]) == 0
    filters = {"lanczos": Image.LANCZOS, "nearest": Image.NEAREST}
    with Image.open(photo) as image:
        expected = np.asarray(image.convert("RGB").resize(size, filters[resample])).astype(int)
    got = rgb(out)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1  # PNG's 8 bits, rounded twice
    assert recipe(out)["image"]["resample"] == resample


def test_upscale_with_noise_inversion_keeps_more_of_the_image(photo, tmp_path):
    """At a high strength, the image inverted to the starting noise through the same views comes back closer to
    the enlargement than the image noised with fresh noise does."""
    fresh, inverted, plain = tmp_path / "fresh.png", tmp_path / "inverted.png", tmp_path / "plain.png"
    argv = ["upscale", str(photo), "--scale", "2", "--strength", "0.8", "--seed", "3", *TOY, "--steps", "6"]
    assert exit_code([*argv, "--out", str(fresh)]) == 0
    assert exit_code([*argv, "--noise-inversion", "6", "--out", str(inverted)]) == 0
    assert exit_code([*argv, "--strength", "0", "--out", str(plain)]) == 0
    assert recipe(inverted)["image"]["noise_inversion_steps"] == 6
    assert np.abs(rgb(inverted) - rgb(plain)).mean() < np.abs(rgb(fresh) - rgb(plain)).mean()


def test_outpaint_keeps_the_image_and_draws_the_margins(photo, tmp_path):
    out = tmp_path / "wide.png"
    argv = ["outpaint", str(photo), "--left", "16", "--right", "8", "--top", "8", "--prompt", "sky", "--feather", "0"]
    assert exit_code([*argv, *TOY, "--seed", "1", "--out", str(out)]) == 0
    got = rgb(out)
    assert got.shape == (H + 8, W + 24, 3)
    assert np.abs(got[8:, 16 : 16 + W] - rgb(photo)).max() <= 1  # a hard edge keeps the image exactly
    assert got[:, :16].std() > 1 and got[:8].std() > 1  # the margins were drawn, not left grey
    meta = recipe(out)
    assert meta["mode"] == "outpaint" and meta["image"]["input"] == record_of(photo)
    margins = {"left": 16, "right": 8, "top": 8, "bottom": 0, "feather": 0.0, "strength": 1.0}
    assert {k: meta["image"][k] for k in margins} == margins


def test_outpaint_circular_joins_the_ends(photo, tmp_path):
    out = tmp_path / "pano.png"
    argv = ["outpaint", str(photo), "--left", "24", "--right", "24", "--tile", "x", "--prompt", "sky"]
    assert exit_code([*argv, "--feather", "0", *TOY, "--out", str(out)]) == 0
    got = rgb(out)
    assert got.shape == (H, W + 48, 3)
    assert np.abs(got[:, 24 : 24 + W] - rgb(photo)).max() <= 1
    meta = recipe(out)
    assert meta["tile"] == "x" and meta["mode"] == "outpaint"


def test_inpaint_keeps_the_unmasked_pixels(photo, mask, tmp_path):
    out = tmp_path / "fixed.png"
    argv = ["inpaint", str(photo), "--mask", str(mask), "--prompt", "sky", "--feather", "0", "--seed", "9"]
    assert exit_code([*argv, *TOY, "--num-images", "2", "--out", str(out)]) == 0
    keep = rgb(mask)[..., 0] == 0
    first, second = tmp_path / "fixed-0.png", tmp_path / "fixed-1.png"
    for path, seed in ((first, 9), (second, 10)):
        got = rgb(path)
        assert got.shape == (H, W, 3)
        assert np.abs(got - rgb(photo))[keep].max() <= 1
        assert np.abs(got - rgb(photo))[~keep].mean() > 10  # the white part was redrawn
        meta = recipe(path)
        assert meta["mode"] == "inpaint" and meta["seed"] == seed
        assert meta["image"]["input"] == record_of(photo) and meta["image"]["mask"] == record_of(mask)
        assert meta["image"]["strength"] == 1.0 and meta["image"]["feather"] == 0.0
    assert pixels(first) != pixels(second)


def test_inpaint_below_full_strength_is_recorded(photo, mask, tmp_path):
    out = tmp_path / "fixed.png"
    argv = ["inpaint", str(photo), "--mask", str(mask), "--prompt", "sky", "--strength", "0.5", "--feather", "0"]
    assert exit_code([*argv, *TOY, "--out", str(out)]) == 0
    keep = rgb(mask)[..., 0] == 0
    assert np.abs(rgb(out) - rgb(photo))[keep].max() <= 1
    assert recipe(out)["image"]["strength"] == 0.5
    with Image.open(out) as image:
        assert "Denoising strength: 0.5" in image.text["parameters"]


def test_an_image_run_is_not_reproduced_and_the_error_says_how_to_run_it_again(photo, tmp_path, capfd):
    """``reproduce`` on an upscaled image's PNG: one error line (exit status 2, nothing written) naming the input,
    the command and the seed."""
    out = tmp_path / "big.png"
    assert exit_code(["upscale", str(photo), "--scale", "2", "--seed", "4", *TOY, "--out", str(out)]) == 0
    capfd.readouterr()
    assert exit_code(["reproduce", str(out), "--out", str(tmp_path / "again.png"), "-q"]) == 2
    line = one_error_line(capfd)
    assert not (tmp_path / "again.png").exists()
    assert "photo.png" in line and "--seed 4" in line and "upscale" in line


def test_image_commands_take_the_panorama_options(photo, tmp_path):
    """Sampling, guidance and SyncDiffusion options pass through to the run and its recipe."""
    out = tmp_path / "big.png"
    argv = ["upscale", str(photo), "--scale", "1", "--strength", "0.7", *TOY, "--scheduler", "euler"]
    argv += ["--guidance", "2", "--sync", "--sync-loss", "builtin", "--sync-stop-step", "2"]
    assert exit_code([*argv, "--out", str(out)]) == 0
    meta = recipe(out)
    assert (meta["scheduler"], meta["guidance_scale"], meta["window"], meta["stride"]) == ("euler", 2.0, 32, 8)
    assert meta["sync"] is True and meta["sync_loss"] == "builtin" and meta["sync_stop_step"] == 2
    assert meta["mode"] == "upscale" and (meta["width"], meta["height"]) == (W, H)


def test_regions_layout_with_an_init_image_keeps_it(photo, tmp_path, capfd):
    """``regions --layout`` with ``init_image``: the picture is kept where it is placed (feather 0), the margins
    are drawn by the regions, and the recipe names the input; --checkpoint is refused for such a layout."""
    import json

    layout = tmp_path / "layout.json"
    doc = {
        "width": 96,
        "height": 48,
        "background": "sky",
        "regions": [{"prompt": "red", "box": [80, 0, 96, 48]}],
        "init_image": {"path": photo.name, "left": 24, "top": 8, "feather": 0},
    }
    layout.write_text(json.dumps(doc))
    out = tmp_path / "out.png"
    assert exit_code(["regions", "--regions-file", str(layout), "--seed", "2", *TOY, "--out", str(out)]) == 0
    assert np.abs(rgb(out)[8 : 8 + H, 24 : 24 + W] - rgb(photo)).max() <= 1  # PNG rounding
    meta = recipe(out)
    assert meta["mode"] == "regions" and meta["image"]["mode"] == "init_image"
    assert meta["image"]["input"] == record_of(photo) and (meta["image"]["left"], meta["image"]["top"]) == (24, 8)
    again = tmp_path / "again.png"
    argv = [
        "regions",
        "--regions-file",
        str(layout),
        *TOY,
        "--checkpoint",
        str(tmp_path / "c.ckpt"),
        "--out",
        str(again),
    ]
    assert exit_code(argv) == 2
    assert "init_image cannot be checkpointed" in one_error_line(capfd) and not again.exists()


@pytest.mark.parametrize("command", ["outpaint", "inpaint"])
def test_a_conditional_sampler_is_chosen_on_the_command_line_and_recorded(photo, mask, tmp_path, command):
    """--conditional and its settings reach the run (recorded in the PNG), and keep the known pixels."""
    out = tmp_path / "out.png"
    place = ["--left", "16", "--prompt", "sky"] if command == "outpaint" else ["--mask", str(mask), "--prompt", "sky"]
    argv = [command, str(photo), *place, "--conditional", "repaint", "--passes", "2", "--fraction", "0.5"]
    assert exit_code([*argv, "--span", "last", "--feather", "0", "--seed", "1", *TOY, "--out", str(out)]) == 0
    meta = recipe(out)["image"]
    assert (meta["conditional"], meta["passes"], meta["fraction"], meta["span"]) == ("repaint", 2, 0.5, "last")
    kept = rgb(out)[:, 16:] if command == "outpaint" else rgb(out)
    if command == "outpaint":
        assert np.array_equal(kept, rgb(photo))  # identity codec, feather 0: bit for bit
    else:
        outside = np.asarray(Image.open(mask)) == 0
        assert np.array_equal(kept[outside], rgb(photo)[outside])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--conditional", "repaint", "--passes", "1"], "repaint needs passes ≥ 2"),
        (["--conditional", "tweedie", "--iterations", "0"], "iterations must be a whole number in 1…64"),
        (["--fraction", "0"], "fraction of the steps must be in (0, 1]"),
    ],
)
def test_bad_conditional_settings_are_one_line_before_loading(photo, tmp_path, capfd, extra, message):
    out = tmp_path / "out.png"
    argv = ["outpaint", str(photo), "--left", "16", "--prompt", "sky", *extra, *TOY, "--out", str(out)]
    assert exit_code(argv) == 2 and not out.exists()
    assert message in one_error_line(capfd)
