"""A finished image whose output cannot be written is not lost: it goes to the temporary folder, and the error is
one line saying so (the suite runs as root, so a real read-only folder cannot be made; the write is made to fail)."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from multidiffusion.core.errors import OutputError
from multidiffusion.pipeline.files import png


def fail_for(target: Path, code: int = errno.EACCES):
    """A stand-in for png._write that fails like the OS for ``target`` and writes anything else."""
    real = png._write

    def write(image, out, info):
        if Path(out) == target:
            raise PermissionError(code, "Permission denied")
        real(image, out, info)

    return write


def test_an_unwritable_output_is_rescued_to_the_temporary_folder(tmp_path: Path, monkeypatch) -> None:
    out_dir, rescue_dir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    rescue_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_dir))
    target = out_dir / "pano.png"
    monkeypatch.setattr(png, "_write", fail_for(target))
    with pytest.raises(OutputError) as caught:
        png.save_png(Image.new("RGB", (8, 4), "red"), target, {"multidiffusion": '{"seed": 1}'})
    message = str(caught.value)
    assert "\n" not in message and "Permission denied" in message
    rescued = list(rescue_dir.glob("multidiffusion-unsaved-*-pano.png"))
    assert len(rescued) == 1 and str(rescued[0]) in message
    with Image.open(rescued[0]) as image:
        assert image.size == (8, 4) and image.text["multidiffusion"] == '{"seed": 1}'
    assert list(out_dir.iterdir()) == []  # no partial file or temporary left beside the target


def test_a_failed_real_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    """The atomic write itself: a failure while renaming removes the temporary file."""

    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(png.os, "replace", refuse)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "nowhere"))  # the rescue cannot be written either
    with pytest.raises(OutputError, match=r"No space left on device.*could not be saved anywhere"):
        png.save_png(Image.new("RGB", (4, 4)), tmp_path / "a.png", {})
    assert list(tmp_path.iterdir()) == []
