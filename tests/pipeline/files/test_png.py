"""Output names against the file system's limit: a name past 255 bytes is one line before any model loads, and
every name within it is written, its temporary name cut to fit (issue 31, item 13)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from multidiffusion.core.errors import InvalidInputError, OutputError
from multidiffusion.pipeline.files import atomic, png
from tests.helpers.cli import exit_code, one_error_line

TOY = ["--model", "toy", "--height", "32", "--width", "96", "--window", "32", "--steps", "1", "-q"]


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
