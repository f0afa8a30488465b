"""The UI's work without a browser: painted masks by colour, the model list, one run at a time, view outlines."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import exit_code
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui_session import PAINT_COLOURS, UiSession, model_choices, outline_views, painted_masks


def test_painted_masks_follow_the_brush_colours():
    layer = np.zeros((8, 12, 4), dtype=np.uint8)  # transparent: nothing painted
    layer[1:4, 1:5] = (*PAINT_COLOURS[0][1], 255)  # red
    layer[5:7, 6:11] = (*PAINT_COLOURS[2][1], 255)  # blue
    layer[0, 11] = (128, 128, 128, 255)  # a colour of no brush: no region
    masks = painted_masks(layer)
    assert set(masks) == {"red", "blue"}
    assert masks["red"].sum() == 12 and masks["red"][1:4, 1:5].all()
    assert masks["blue"].sum() == 10 and masks["blue"][5:7, 6:11].all()
    with pytest.raises(InvalidInputError, match="RGB or RGBA"):
        painted_masks(np.zeros((4, 4), dtype=np.uint8))


def test_models_offered_are_the_toy_and_the_folders_with_a_model(tmp_path):
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    assert model_choices(str(tmp_path), "toy") == ["toy", str(tmp_path / "sd")]


def test_one_run_at_a_time(tmp_path):
    session = UiSession(out_dir=tmp_path)
    session._lock.acquire()  # a run in progress
    with pytest.raises(InvalidInputError, match="already running"):
        session.run(lambda **kwargs: None)
    session._lock.release()


def test_views_are_outlined_where_the_recipe_put_them(tmp_path):
    """64 × 256 px, window 32, stride 16: 3 × 15 views; every view's left edge column is drawn white."""
    out = tmp_path / "p.png"
    argv = ["panorama", "a red ball", "--model", "toy", "--height", "64", "--width", "256", "--window", "32"]
    assert exit_code([*argv, "--stride", "16", "--steps", "2", "--seed", "1", "--out", str(out), "-q"]) == 0
    pixels = np.asarray(outline_views(str(out)))
    for left in range(0, 256 - 32 + 1, 16):
        assert (pixels[:, left] == 255).all(), left
    assert not (pixels[20, 8] == 255).all()  # inside a view, off every edge: the image itself
