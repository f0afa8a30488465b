"""The UI's work without a browser: painted masks by colour, the model list, one run at a time, view outlines."""

from __future__ import annotations

import numpy as np
import pytest

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.session import PAINT_COLOURS, UiSession, model_choices, outline_views, painted_masks
from tests.helpers.cli import exit_code


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


def test_a_painted_layout_exports_for_the_cli_and_imports_back(tmp_path):
    """Painted masks → zip (layout.json + mask PNGs) → the CLI's layout reader, and back to the same paint."""
    import json
    import zipfile

    from multidiffusion.interfaces.ui.session import layout_to_paint, layout_to_zip
    from multidiffusion.pipeline.inputs.region_file import load_region_file

    masks = {"red": np.zeros((32, 48), dtype=bool), "blue": np.zeros((32, 48), dtype=bool)}
    masks["red"][4:20, 2:18] = True
    masks["blue"][10:30, 30:46] = True
    archive = layout_to_zip(masks, {"red": "a red ball", "blue": "a blue box"}, "green grass", tmp_path / "l.zip")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "x")
    layout = load_region_file(tmp_path / "x" / "layout.json")
    assert (layout.width, layout.height) == (48, 32) and [r.prompt for r in layout.regions] == [
        "a red ball",
        "a blue box",
    ]
    layer, prompts, background = layout_to_paint(str(archive))
    again = painted_masks(layer)
    assert set(again) == {"red", "blue"} and all((again[k] == masks[k]).all() for k in masks)
    assert prompts == {"red": "a red ball", "blue": "a blue box"} and background == "green grass"
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"width": 40, "height": 20, "regions": [{"prompt": "x", "box": [0, 0, 10, 20]}],
                                 "background": "y"}))  # fmt: skip
    layer, prompts, _ = layout_to_paint(str(boxes))
    assert painted_masks(layer)["red"].sum() == 10 * 20 and prompts == {"red": "x"}


def test_a_zip_with_paths_is_refused(tmp_path):
    import zipfile

    from multidiffusion.interfaces.ui.session import layout_to_paint

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.json", "{}")
    with pytest.raises(InvalidInputError, match="only flat file names"):
        layout_to_paint(str(bad))
