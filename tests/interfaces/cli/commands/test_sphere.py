"""``multidiffusion panorama --sphere`` on the toy model: a 2H × H equirectangular PNG tagged as a photo sphere, its
cube faces, its reproduction, and the options a sphere refuses (one line, exit 2, no file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.cli import exit_code, one_error_line, pixels, recipe

SPHERE = ["panorama", "sea and sky", "--model", "toy", "--sphere", "--height", "128", "--steps", "4", "-q"]


def test_a_sphere_is_written_tagged_with_its_faces_and_reproduces(tmp_path: Path):
    out, faces = tmp_path / "sphere.png", tmp_path / "sky"
    assert exit_code([*SPHERE, "--seed", "3", "--out", str(out), "--cubemap", str(faces)]) == 0
    with Image.open(out) as image:
        assert image.size == (256, 128)
        assert 'GPano:ProjectionType="equirectangular"' in image.text["XML:com.adobe.xmp"]
    meta = recipe(out)
    assert meta["mode"] == "sphere" and (meta["width"], meta["height"]) == (256, 128) and meta["sphere_fov"] > 0
    assert sorted(p.name for p in faces.iterdir()) == sorted(
        f"{n}.png" for n in ("front", "right", "back", "left", "up", "down")
    )
    assert Image.open(faces / "front.png").size == (64, 64)
    again = tmp_path / "again.png"
    assert exit_code(["reproduce", str(out), "--out", str(again), "-q"]) == 0
    assert pixels(again) == pixels(out)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--width", "300"], "a sphere is twice as wide as high: leave out --width, or give 256"),
        (["--window", "32"], "--window does not apply to --sphere"),
        (["--sync"], "--sync does not apply to --sphere"),
        (["--fov", "40"], "for this height use fov"),
        (["--fov", "200"], "the sphere's fov must be 30…120 degrees"),
    ],
)
def test_what_a_sphere_refuses_is_one_line(tmp_path: Path, capfd, extra, message):
    out = tmp_path / "x.png"
    assert exit_code([*SPHERE, *extra, "--out", str(out)]) == 2 and not out.exists()
    assert message in one_error_line(capfd)


def test_sphere_options_without_sphere_are_refused(tmp_path: Path, capfd):
    out = tmp_path / "x.png"
    assert exit_code(["panorama", "sky", "--model", "toy", "--fov", "90", "--out", str(out), "-q"]) == 2
    assert "--fov applies to --sphere only" in one_error_line(capfd)


def test_photo_to_360_on_the_command_line(tmp_path: Path, capfd):
    import numpy as np

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3)).astype(np.uint8)).save(photo)
    out = tmp_path / "360.png"
    argv = ["outpaint", str(photo), "--sphere", "--fov", "90", "--yaw", "30", "--height", "128", "--prompt", "sky"]
    assert exit_code([*argv, "--model", "toy", "--steps", "4", "--seed", "1", "-q", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (256, 128) and "equirectangular" in image.text["XML:com.adobe.xmp"]
    assert recipe(out)["image"]["mode"] == "photo-sphere"
    assert exit_code([*argv[:3], "--height", "128", "--prompt", "sky", "--model", "toy", "--out", str(out)]) == 2
    assert "--sphere needs --fov" in one_error_line(capfd)
