"""Sizes, views and layouts are checked against the model's geometry, read from its configs, before any weight loads
(issue 30, item 1): each mistake is one line and exit 2 without the model being loaded, and a correct command still
loads and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.cli import exit_code, one_error_line
from tests.helpers.family_folders import save_family_folders

SD_KEY = "model.diffusion_model.output_blocks.11.0.skip_connection.weight"  # what diffusers reads as SD 1.x


@pytest.fixture()
def no_loading(monkeypatch):
    """Any model load fails the test: the check under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(MultiDiffusionPipeline, "from_pretrained", refuse)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny SDXL, SD 3 and Flux model folders."""
    return save_family_folders(tmp_path_factory.mktemp("families"))


def _refused(capfd, argv: list[str], out: Path) -> str:
    assert exit_code([*argv, "--out", str(out), "-q"]) == 2
    assert not out.exists()
    return one_error_line(capfd)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--height", "60"], "height must be a multiple of 8 px for this model, got 60 (nearest: 64)"),
        (["--width", "100"], "width must be a multiple of 8 px for this model, got 100"),
        (["--window", "100"], "window must be a multiple of 8 px for this model, got 100"),
        (["--window", "64", "--stride", "12"], "stride must be a multiple of 8 px for this model, got 12"),
        (["--window", "64", "--stride", "128"], "stride (128 px) must not exceed the window (64 px)"),
        (["--stride", "256"], "stride (256 px) must not exceed the window (128 px)"),  # the native window
        (["--sync", "--sync-loss", "builtin", "--sync-anchor", "99"], "sync anchor view 99 is out of range"),
    ],
)
def test_panorama_size_mistakes_fail_before_loading(no_loading, small_folder, tmp_path, capfd, extra, message):
    argv = ["panorama", "sky", "--model", str(small_folder), "--height", "64", "--width", "256", *extra]
    assert message in _refused(capfd, argv, tmp_path / "x.png")


def _layout(tmp_path: Path, **layout) -> str:
    """A 128×64 px region file with a background (None: without one) and ``layout``'s keys."""
    data = {"height": 64, "width": 128, "background": "sky", **layout}
    path = tmp_path / "layout.json"
    path.write_text(json.dumps({key: value for key, value in data.items() if value is not None}))
    return str(path)


BALL = {"prompt": "a red ball", "box": [0, 0, 32, 32]}


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"width": 100, "regions": [BALL]}, "width must be a multiple of 8 px for this model, got 100"),
        ({"regions": [{**BALL, "box": [100, 0, 200, 32]}]}, "regions[0].box [100, 0, 200, 32] must satisfy"),
        ({"background": None, "regions": [BALL]}, "px uncovered"),
        ({"regions": [{**BALL, "guidance_scale": 500}]}, "guidance scale must be"),
    ],
)
def test_region_file_mistakes_fail_before_loading(no_loading, small_folder, tmp_path, capfd, layout, message):
    argv = ["regions", "--regions-file", _layout(tmp_path, **layout), "--model", str(small_folder)]
    assert message in _refused(capfd, argv, tmp_path / "x.png")


def test_a_region_view_mistake_fails_before_loading(no_loading, small_folder, tmp_path, capfd):
    argv = ["regions", "--regions-file", _layout(tmp_path, regions=[BALL]), "--model", str(small_folder)]
    assert "regions wrap around x only" in _refused(capfd, [*argv, "--tile", "xy"], tmp_path / "x.png")
    assert "window must be a multiple of 8 px" in _refused(capfd, [*argv, "--window", "60"], tmp_path / "x.png")


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("sdxl", ["--height", "60"], "height must be a multiple of 8 px for this model, got 60"),
        ("sd3", ["--height", "264"], "height must be a multiple of 16 px for this model, got 264 (nearest: 256)"),
        ("flux", ["--width", "264"], "width must be a multiple of 16 px for this model, got 264"),
        ("flux", ["--window", "72"], "window must be a multiple of 16 px for this model, got 72"),
    ],
)
def test_other_families_sizes_fail_before_loading(no_loading, folders, tmp_path, capfd, name, extra, message):
    argv = ["panorama", "sky", "--model", str(folders[name]), "--height", "256", "--width", "256", "--steps", "2"]
    assert message in _refused(capfd, [*argv, *extra], tmp_path / "x.png")


def test_a_single_file_with_config_fails_before_loading(no_loading, small_folder, tmp_path, capfd):
    """A .safetensors checkpoint described by a --config folder is checked against that folder's configs."""
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({SD_KEY: torch.zeros(4, 4, 1, 1)}, str(checkpoint))
    argv = ["panorama", "sky", "--model", str(checkpoint), "--config", str(small_folder), "--height", "60"]
    assert "height must be a multiple of 8 px" in _refused(capfd, argv, tmp_path / "x.png")


def test_a_single_file_without_config_is_checked_after_loading(small_folder, tmp_path, capfd, monkeypatch):
    """Its geometry cannot be read before loading: the model loads, then the same check refuses the size."""
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({SD_KEY: torch.zeros(4, 4, 1, 1)}, str(checkpoint))
    loads = []
    real = MultiDiffusionPipeline.from_pretrained.__func__

    def load_the_small_model(cls, source, **kwargs):
        loads.append(source)
        return real(cls, str(small_folder), device="cpu")

    monkeypatch.setattr(MultiDiffusionPipeline, "from_pretrained", classmethod(load_the_small_model))
    argv = ["panorama", "sky", "--model", str(checkpoint), "--height", "60"]
    assert "height must be a multiple of 8 px" in _refused(capfd, argv, tmp_path / "x.png")
    assert loads == [str(checkpoint)]


def test_toy_sizes_fail_before_its_model_is_built(no_loading, tmp_path, capfd):
    argv = ["panorama", "sky", "--model", "toy", "--height", "64", "--width", "128", "--stride", "100"]
    assert "stride (100 px) must not exceed the window (64 px)" in _refused(capfd, argv, tmp_path / "x.png")


def test_correct_commands_still_load_and_run(small_folder, tmp_path):
    out = tmp_path / "pano.png"
    argv = ["panorama", "sky", "--model", str(small_folder), "--height", "64", "--width", "192", "--steps", "2"]
    assert exit_code([*argv, "--window", "64", "--stride", "32", "--out", str(out), "-q"]) == 0
    assert out.stat().st_size > 0
    out = tmp_path / "regions.png"
    argv = ["regions", "--regions-file", _layout(tmp_path, regions=[BALL]), "--model", str(small_folder)]
    assert exit_code([*argv, "--steps", "2", "--out", str(out), "-q"]) == 0
    assert out.stat().st_size > 0


def test_a_window_larger_than_the_canvas_still_runs(small_folder, tmp_path):
    """Not a mistake: the view is the canvas (checked before loading like any other window)."""
    out = tmp_path / "small.png"
    argv = ["panorama", "sky", "--model", str(small_folder), "--height", "64", "--width", "64", "--window", "256"]
    assert exit_code([*argv, "--steps", "2", "--out", str(out), "-q"]) == 0
    assert out.stat().st_size > 0


def _picture(tmp_path: Path, height: int, width: int, name: str = "photo.png") -> str:
    """A grey RGB PNG of (height, width) px."""
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (width, height), (128, 128, 128)).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["outpaint", "{odd}", "--left", "64", "--prompt", "sky"], "the image is 64×60 px; this model needs sides in"),
        (["outpaint", "{ok}", "--left", "60", "--prompt", "sky"], "the left margin must be a multiple of 8 px"),
        (["outpaint", "{ok}", "--left", "64", "--prompt", "sky", "--window", "100"], "window must be a multiple of 8"),
        (["inpaint", "{odd}", "--mask", "{odd_mask}", "--prompt", "sky"], "the image is 64×60 px"),
        (["inpaint", "{ok}", "--mask", "{ok_mask}", "--prompt", "sky", "--stride", "12"], "stride must be a multiple"),
        (["upscale", "{ok}", "--scale", "2", "--window", "64", "--stride", "128"], "stride (128 px) must not exceed"),
    ],
)
def test_image_command_mistakes_fail_before_loading(no_loading, small_folder, tmp_path, capfd, command, message):
    """The image commands check the image's sides, the margins and the views against the geometry read from the
    model's configs, before it loads (they checked only after loading before)."""
    from PIL import Image

    files = {"odd": _picture(tmp_path, 60, 64, "odd.png"), "ok": _picture(tmp_path, 64, 64, "ok.png")}
    for name, (h, w) in {"odd_mask": (60, 64), "ok_mask": (64, 64)}.items():
        files[name] = str(tmp_path / f"{name}.png")
        Image.new("L", (w, h), 255).save(files[name])
    argv = [part.format(**files) for part in command] + ["--model", str(small_folder)]
    assert message in _refused(capfd, argv, tmp_path / "x.png")
