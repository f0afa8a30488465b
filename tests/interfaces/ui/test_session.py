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


def _recipe_png(tmp_path, size: tuple[int, int], **changes: object) -> str:
    """A PNG of ``size`` (width, height) carrying the recipe of a real toy run, with ``changes`` made to it."""
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from multidiffusion.pipeline.settings.recipe import METADATA_KEY
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    made = tmp_path / "made.png"
    argv = ["panorama", "a red ball", "--model", "toy", "--height", "64", "--width", "256", "--window", "32"]
    assert exit_code([*argv, "--stride", "16", "--steps", "1", "--seed", "1", "--out", str(made), "-q"]) == 0
    recipe = {**read_recipe(str(made)), **changes}
    info = PngInfo()
    info.add_text(METADATA_KEY, json.dumps(recipe))
    out = tmp_path / "upload.png"
    Image.new("L", size).save(out, pnginfo=info)
    return str(out)


def test_outlining_millions_of_views_is_refused_by_arithmetic(tmp_path, monkeypatch):
    """The issue's case: a small PNG of 4096² px whose recipe asks for window 1, stride 1 (16.8 M views) is refused
    from the count, before any view is laid or drawn."""
    import time

    import multidiffusion.core as core

    path = _recipe_png(tmp_path, (4096, 4096), window=1, stride=1)
    assert (tmp_path / "upload.png").stat().st_size < 100_000
    laid = []
    real_layout = core.layout_views
    monkeypatch.setattr(core, "layout_views", lambda *a, **k: laid.append(a) or real_layout(*a, **k))
    start = time.perf_counter()
    with pytest.raises(InvalidInputError, match=r"lays 16,777,216 views; at most 10,000 are outlined"):
        outline_views(path)
    elapsed = time.perf_counter() - start
    assert laid == []
    assert elapsed < 10  # generous: the refusal is arithmetic (the issue measured 35 s and 2 GB for the drawing)
    assert np.asarray(outline_views(_recipe_png(tmp_path, (256, 64), window=32, stride=16))).shape == (64, 256, 3)
    assert len(laid) == 1


def test_outline_checks_the_picture_size_and_the_recipe_first(tmp_path, monkeypatch):
    import struct
    import zlib

    from multidiffusion.interfaces.ui import session as ui_session

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 10 Gpx declared, no pixel data
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(InvalidInputError) as caught:
        outline_views(str(huge))
    assert "too many pixels" in str(caught.value) and str(tmp_path) not in str(caught.value)
    monkeypatch.setattr(ui_session, "MAX_OUTLINE_PX", 1000)
    with pytest.raises(InvalidInputError, match=r"this picture is 256×64 px; views are outlined on pictures of up to"):
        outline_views(_recipe_png(tmp_path, (256, 64)))
    monkeypatch.undo()
    for value in ("8", 2.5, [8, 8], True, -8):  # refused by the recipe's reader or by outline_views, in one line
        with pytest.raises(InvalidInputError, match="window"):
            outline_views(_recipe_png(tmp_path, (256, 64), window=value))
    text = tmp_path / "text.png"
    text.write_text("not a picture")
    with pytest.raises(InvalidInputError, match="this file is not a picture PIL can read"):
        outline_views(str(text))


def test_an_imported_region_takes_the_brush_colour_its_prompt_names(tmp_path):
    """Issue 30, item 8: [16, 16, 112, 112] "red" and [144, 16, 240, 112] "blue" on a "green" background paint in red
    and blue, not in the green slot's colour, at the layout's size, each box exactly."""
    import json

    from multidiffusion.interfaces.ui.session import layout_to_paint

    boxes = {"red": (16, 16, 112, 112), "blue": (144, 16, 240, 112)}
    path = tmp_path / "layout.json"
    regions = [{"prompt": name, "box": list(box)} for name, box in boxes.items()]
    path.write_text(json.dumps({"width": 256, "height": 128, "background": "green", "regions": regions}))
    layer, prompts, background = layout_to_paint(str(path))
    assert layer.shape == (128, 256, 4) and prompts == {"red": "red", "blue": "blue"} and background == "green"
    masks = painted_masks(layer)
    assert set(masks) == {"red", "blue"}
    for name, (x0, y0, x1, y1) in boxes.items():
        wanted = np.zeros((128, 256), dtype=bool)
        wanted[y0:y1, x0:x1] = True
        assert (masks[name] == wanted).all(), name


@pytest.mark.parametrize(
    ("names", "prompts", "background", "colours"),
    [
        ([None, None], ["red", "blue"], "green", ["red", "blue"]),  # the layout
        ([None, None], ["a Blue box", "a red ball"], "", ["blue", "red"]),  # named in the prompt, any case
        ([None, None], ["a cat", "a red ball"], "green field", ["blue", "red"]),  # none named: one no prompt names
        ([None, None], ["a blue sky", "a blue car"], "", ["blue", "red"]),  # one colour per region
        (["blue", None], ["a red ball", "a dog"], "", ["blue", "green"]),  # an exported name keeps its colour
        ([None] * 4, ["red", "green", "blue", "a dog"], "", ["red", "green", "blue", "yellow"]),
        ([None] * 4, ["a", "b", "c", "a yellow cab"], "", ["red", "green", "blue", "yellow"]),
        ([None, None], ["reddish clay", "bluebells"], "", ["red", "green"]),  # whole words only
    ],
)
def test_slot_colours_do_not_contradict_the_prompts(names, prompts, background, colours):
    from multidiffusion.interfaces.ui.session import slot_colours

    assert slot_colours(names, prompts, background) == colours


def test_a_layout_of_more_regions_than_colours_is_refused():
    from multidiffusion.interfaces.ui.session import slot_colours

    with pytest.raises(InvalidInputError, match="has 5 regions; the page paints at most 4"):
        slot_colours([None] * 5, ["x"] * 5)
