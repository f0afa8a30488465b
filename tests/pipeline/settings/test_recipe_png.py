"""Reading the recipe from a PNG's text chunks alone (issue 31, item 6's bombs): no pixel decoded, nothing else
inflated, the recipe itself inflated no further than its limit."""

from __future__ import annotations

import json
import zlib

import pytest
from PIL import Image

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.settings.recipe_png import png_recipe_text
from multidiffusion.pipeline.settings.recipe_schema import MAX_RECIPE_BYTES
from tests.pipeline.settings.recipe_files import chunk, itxt, png_with_recipe, write_png, ztxt

RECIPE = '{"mode": "panorama"}'


def one_line(call, *args) -> str:
    with pytest.raises(InvalidInputError) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_recipe_this_package_writes_is_read(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    long = json.dumps({"mode": "regions", "pad": "x" * 5000})
    info.add_itxt("multidiffusion", long, zip=True)  # as files/png.py writes a long recipe
    info.add_text("parameters", "a prompt")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png", pnginfo=info)
    assert png_recipe_text(tmp_path / "a.png") == long
    plain = PngInfo()
    plain.add_text("multidiffusion", RECIPE)
    Image.new("L", (4, 4)).save(tmp_path / "b.png", pnginfo=plain)
    assert png_recipe_text(tmp_path / "b.png") == RECIPE
    z = write_png(tmp_path / "c.png", [ztxt("multidiffusion", zlib.compress(RECIPE.encode()))])
    assert png_recipe_text(z) == RECIPE


def test_a_20000_squared_png_is_read_without_decoding_its_pixels(tmp_path):
    big = png_with_recipe(tmp_path / "big.png", RECIPE, size=(20_000, 20_000))
    with pytest.raises(Image.DecompressionBombError):  # what PIL does with it: the traceback of the issue
        Image.open(big)
    assert png_recipe_text(big) == RECIPE


def test_ztxt_bombs_in_other_chunks_are_skipped_unread(tmp_path):
    bomb = zlib.compress(bytes(2 << 20), 9)  # 2 MiB each, past PIL's 1 MiB per chunk; 80 MiB in all
    path = write_png(tmp_path / "z.png", [ztxt(f"k{i}", bomb) for i in range(40)] + [itxt("multidiffusion", RECIPE)])
    with pytest.raises(ValueError, match="too large"):  # PIL: MAX_TEXT_CHUNK / MAX_TEXT_MEMORY
        Image.open(path).load()
    assert png_recipe_text(path) == RECIPE


def test_a_recipe_that_inflates_past_the_limit_is_refused(tmp_path):
    over = zlib.compress(b" " * (MAX_RECIPE_BYTES + 1), 9)
    path = write_png(tmp_path / "r.png", [ztxt("multidiffusion", over)])
    assert "larger than 64 MiB" in one_line(png_recipe_text, path)
    path = write_png(tmp_path / "i.png", [chunk(b"iTXt", b"multidiffusion\0\1\0\0\0" + over)])
    assert "larger than 64 MiB" in one_line(png_recipe_text, path)


def test_damaged_and_foreign_files_are_one_line(tmp_path):
    good = png_with_recipe(tmp_path / "g.png", RECIPE).read_bytes()
    at = good.index(b"iTXt")
    damaged = tmp_path / "d.png"
    damaged.write_bytes(good[: at + 30] + b"?" + good[at + 31 :])
    assert "CRC mismatch" in one_line(png_recipe_text, damaged)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: at + 20])
    assert "ends inside its recipe chunk" in one_line(png_recipe_text, cut)
    bad_zlib = write_png(tmp_path / "b.png", [ztxt("multidiffusion", b"not zlib")])
    assert "bad compressed data" in one_line(png_recipe_text, bad_zlib)
    no_separator = write_png(tmp_path / "n.png", [chunk(b"iTXt", b"multidiffusion\0\0\0")])
    assert "malformed" in one_line(png_recipe_text, no_separator)
    jpeg = tmp_path / "x.jpg"
    Image.new("RGB", (4, 4)).save(jpeg)
    assert "is not a PNG" in one_line(png_recipe_text, jpeg)
    assert "carries no multidiffusion recipe" in one_line(png_recipe_text, write_png(tmp_path / "e.png", []))
    message = one_line(png_recipe_text, tmp_path / "folder" / "missing.png")
    assert "cannot read image 'missing.png'" in message and str(tmp_path) not in message  # no server path
