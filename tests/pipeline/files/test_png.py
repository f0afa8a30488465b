"""Output names against the file system's limit: a name past 255 bytes is one line before any model loads, and
every name within it is written, its temporary name cut to fit (issue 31, item 13). A missing output folder is made
when the image is written, and only then (issue 30, item 7); one that cannot be made is one line before loading."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from multidiffusion.core.errors import InvalidInputError, OutputError
from multidiffusion.pipeline.files import atomic, png
from tests.helpers.cli import exit_code, one_error_line, recipe

TOY = ["--model", "toy", "--height", "32", "--width", "96", "--window", "32", "--steps", "1", "-q"]
TOY_2 = ["--model", "toy", "--height", "32", "--width", "96", "--steps", "2", "-q"]


@pytest.mark.parametrize(
    ("name", "size"),
    [("x" * 252 + ".png", 256), ("x" * 296 + ".png", 300), ("é" * 126 + ".png", 256), ("雪" * 84 + ".png", 256)],
)
def test_a_name_past_the_limit_is_one_line_before_loading(tmp_path, capfd, name, size):
    capfd.readouterr()
    assert exit_code(["panorama", "a lake", *TOY, "--out", str(tmp_path / name)]) == 2
    line = one_error_line(capfd)
    assert f"is {size} bytes; a file name may have at most 255 bytes" in line
    assert len(line) < 200  # the name is shortened in the message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["x" * 251 + ".png", "é" * 125 + "x.png", "a.png"])
def test_a_name_within_the_limit_is_written_with_no_temporary_left(tmp_path, name):
    assert len(os.fsencode(name)) <= 255
    assert exit_code(["panorama", "a lake", *TOY, "--out", str(tmp_path / name)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_every_temporary_name_fits(tmp_path):
    """The prefix ``mkstemp`` gets, with its 8 random characters and ``.tmp``, is at most 255 bytes, cut at whole
    characters."""
    for name in ["x" * 255, "é" * 127 + "x", "雪" * 85, "a.png"]:
        prefix = atomic.temp_prefix(tmp_path / name)
        assert len(os.fsencode(prefix + "abcdefgh.tmp")) <= 255
        assert prefix.startswith(".") and prefix.endswith(".") and (prefix[1:-1] in name)
    assert atomic.temp_prefix(tmp_path / "a.png") == ".a.png."


def test_the_rescue_name_fits_too(tmp_path, monkeypatch):
    """An unwritable 255-byte output is rescued under a name cut to fit the temporary folder's limit."""
    rescue_dir, target = tmp_path / "tmp", tmp_path / ("y" * 251 + ".png")
    rescue_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_dir))
    real = png._write

    def write(image, out, info):
        if Path(out) == target:
            raise PermissionError(13, "Permission denied")
        real(image, out, info)

    monkeypatch.setattr(png, "_write", write)
    with pytest.raises(OutputError, match="was saved to"):
        png.save_png(Image.new("RGB", (4, 4)), target, {})
    [rescued] = list(rescue_dir.iterdir())
    assert rescued.name.startswith("multidiffusion-unsaved-") and rescued.name.endswith(".png")
    assert len(os.fsencode(rescued.name)) <= 255


def test_a_path_past_the_system_limit_is_one_line(tmp_path):
    deep = tmp_path / (("d" * 200 + "/") * 25 + "x.png")  # over 4096 bytes: PATH_MAX
    with pytest.raises(InvalidInputError) as caught:
        png.check_output_path(deep)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def _folder_mode() -> int:
    """The permission bits ``mkdir`` gives a new folder here: 0777 less the umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def test_the_panorama_command_makes_a_missing_output_folder(tmp_path):
    out = tmp_path / "new" / "deeper" / "pano.png"
    assert exit_code(["panorama", "a lake", *TOY_2, "--out", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["pano.png"]
    assert recipe(out)["height"] == 32 and recipe(out)["width"] == 96
    for folder in (tmp_path / "new", out.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == _folder_mode()


def test_several_images_go_into_one_new_folder(tmp_path):
    out = tmp_path / "new" / "pano.png"
    assert exit_code(["panorama", "a lake", *TOY_2, "--num-images", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pano-0.png", "pano-1.png"]


def test_the_batch_command_makes_a_missing_output_folder(tmp_path):
    made = tmp_path / "made.png"
    assert exit_code(["panorama", "a lake", *TOY_2, "--seed", "3", "--out", str(made)]) == 0
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({**recipe(made), "out": "runs/one/a.png"}) + "\n" + json.dumps({**recipe(made), "out": "b.png"})
    )
    assert exit_code(["batch", str(jobs), "-q"]) == 0
    assert [p.name for p in (tmp_path / "runs" / "one").iterdir()] == ["a.png"]
    assert (tmp_path / "b.png").is_file()
    assert recipe(tmp_path / "runs" / "one" / "a.png")["seed"] == 3


def test_a_run_that_fails_before_writing_makes_no_folder(tmp_path, capfd):
    """The folder is checked before loading but made only when the image is written: a refused run leaves none."""
    capfd.readouterr()
    out = tmp_path / "new" / "pano.png"
    assert exit_code(["panorama", "a lake", *TOY_2, "--out", str(out), "--guidance", "-1"]) == 2
    assert "guidance scale must be ≥ 0" in one_error_line(capfd)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_job_makes_no_folder(tmp_path, capfd):
    """A batch job that fails when its model loads (a hub id not in the offline cache) makes no folder for it."""
    made = tmp_path / "made.png"
    assert exit_code(["panorama", "a lake", *TOY_2, "--out", str(made)]) == 0
    jobs = tmp_path / "jobs.jsonl"
    job = {**recipe(made), "model": "nobody/not-in-the-cache", "out": "never/a.png"}
    jobs.write_text(json.dumps(job) + "\n")
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 1
    assert not (tmp_path / "never").exists()


def test_checking_a_path_makes_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "x.png"
    assert png.check_output_path(out) == out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("notes.txt/sub/x.png", "cannot be made: '{tmp}/notes.txt' is not a folder"),
        ("notes.txt/x.png", "cannot be made: '{tmp}/notes.txt' is not a folder"),
        ("dangling/x.png", "cannot be made: '{tmp}/dangling' is not a folder"),
        ("d" * 256 + "/x.png", "output name 'ddd"),
    ],
)
def test_a_folder_that_cannot_be_made_is_one_line_before_loading(tmp_path, capfd, out, message):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    (folder / "dangling").symlink_to(folder / "nowhere")
    before = sorted(folder.iterdir())
    capfd.readouterr()
    assert exit_code(["panorama", "a lake", *TOY_2, "--out", str(folder / out)]) == 2
    line = one_error_line(capfd)
    assert message.replace("{tmp}", str(folder)) in line
    assert sorted(folder.iterdir()) == before


def test_a_folder_under_an_unwritable_one_is_one_line(capfd):
    """``/proc/1`` refuses new entries even to root (the suite runs as root, for whom a chmod does not)."""
    capfd.readouterr()
    assert exit_code(["panorama", "a lake", *TOY_2, "--out", "/proc/1/new/x.png"]) == 2
    line = one_error_line(capfd)
    assert "output folder '/proc/1/new' does not exist and cannot be made: '/proc/1' is not writable" in line


def test_save_png_makes_the_folder(tmp_path):
    out = tmp_path / "x" / "y" / "z.png"
    png.save_png(Image.new("RGB", (4, 4)), out, {"k": "v"})
    with Image.open(out) as image:
        assert image.size == (4, 4) and image.text["k"] == "v"


def test_a_photo_sphere_carries_its_gpano_xmp(tmp_path):
    """The XMP packet goes, uncompressed, into the iTXt chunk XMP readers look for, and parses as XML with GPano's
    equirectangular projection and the full size."""
    import xml.etree.ElementTree as ET

    from PIL import Image

    from multidiffusion.pipeline.files.gpano import XMP_KEY, gpano_xmp
    from multidiffusion.pipeline.files.png import save_png

    out = tmp_path / "sphere.png"
    save_png(Image.new("RGB", (64, 32)), out, {"k": "v"}, xmp=gpano_xmp(64, 32))
    raw = out.read_bytes()
    assert b"iTXt" + XMP_KEY.encode() + b"\x00\x00\x00" in raw  # keyword, then compression flag 0 (and method 0)
    packet = Image.open(out).text[XMP_KEY]
    root = ET.fromstring(packet[packet.index("<x:xmpmeta") : packet.index("</x:xmpmeta>") + len("</x:xmpmeta>")])
    gpano = "{http://ns.google.com/photos/1.0/panorama/}"
    description = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    assert description.get(gpano + "ProjectionType") == "equirectangular"
    assert (description.get(gpano + "FullPanoWidthPixels"), description.get(gpano + "FullPanoHeightPixels")) == (
        "64",
        "32",
    )
    assert Image.open(out).text["k"] == "v"
