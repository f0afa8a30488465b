"""The 360° viewer's copy of an image (interfaces/ui/viewer.py): enlarged with interpolation that wraps around, so
that the ±180° line is as smooth as the inside; and the viewer's files ship with the package."""

from __future__ import annotations

import numpy as np
from PIL import Image

from multidiffusion.interfaces.ui.viewer import SCRIPTS, STATIC_DIR, STYLES, viewer_copy, wrapped_enlargement


def _wrapping_picture(height: int = 32, width: int = 128) -> np.ndarray:
    """A smooth 360° picture: sinusoids of the column angle, so the last column leads into the first."""
    angle = np.linspace(0, 2 * np.pi, width, endpoint=False)[None, :, None]
    rows = np.linspace(0, 1, height)[:, None, None]
    phase = np.array([0.0, 2.0, 4.0])[None, None, :]
    return (127.5 + 100 * np.sin(3 * angle + phase) * (0.5 + 0.5 * rows)).round().astype(np.uint8)


def _column_steps(rgb: np.ndarray) -> np.ndarray:
    """Mean absolute step between each column and the next, the last one to the first included (W,)."""
    values = rgb.astype(np.float64)
    return np.abs(np.roll(values, -1, axis=1) - values).mean(axis=(0, 2))


def test_the_enlargement_wraps_around():
    picture = _wrapping_picture()
    big = wrapped_enlargement(picture, width=1024)
    assert big.shape == (256, 1024, 3) and big.dtype == np.uint8
    steps = _column_steps(big)
    assert steps[-1] <= 1.5 * np.median(steps[:-1]) + 1.0, (steps[-1], np.median(steps))
    # without the wrap-around padding, PIL clamps at the ends and the seam is a step of a whole source column
    plain = np.asarray(Image.fromarray(picture).resize((1024, 256), Image.LANCZOS))
    assert _column_steps(plain)[-1] > 3 * steps[-1]


def test_wide_images_are_left_as_they_are(tmp_path):
    picture = _wrapping_picture(width=256)
    assert wrapped_enlargement(picture, width=256) is picture
    source = tmp_path / "pano.png"
    Image.fromarray(picture).save(source)
    copy = viewer_copy(str(source), tmp_path / "360")
    assert Image.open(copy).size == (4096, 512)


def test_the_viewer_files_ship_with_the_package():
    for name in (*SCRIPTS, *STYLES, "pannellum/COPYING"):
        assert (STATIC_DIR / name).is_file(), name
    assert "MIT" in (STATIC_DIR / "pannellum" / "README.md").read_text()
