"""``multidiffusion regions`` end to end on a tiny model folder; layout errors name their JSON path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import REPO_ROOT
from tests.helpers.cli import assert_one_line_error, exit_code

ROOT = REPO_ROOT
FAST = ["--steps", "2", "-q"]


def write_layout(folder: Path, layout: dict) -> Path:
    path = folder / "layout.json"
    path.write_text(json.dumps(layout))
    return path


BASE = {
    "width": 256,
    "height": 128,
    "background": "a sandy beach",
    "seed": 4,
    "regions": [
        {"name": "ball", "prompt": "a red ball", "box": [16, 16, 112, 112]},
        {"name": "sea", "prompt": "the sea", "mask": "sea.png", "guidance_scale": 5.0, "negative_prompt": "boats"},
    ],
}


@pytest.fixture
def layout_dir(tmp_path):
    mask = Image.new("L", (256, 128), 0)
    mask.paste(255, (128, 64, 256, 128))
    mask.save(tmp_path / "sea.png")
    return tmp_path


def test_regions_writes_image_metadata_and_segmentation(small_folder, layout_dir):
    layout = write_layout(layout_dir, BASE)
    out, seg = layout_dir / "out.png", layout_dir / "seg.png"
    args = [
        "regions",
        "--regions-file",
        str(layout),
        "--model",
        str(small_folder),
        *FAST,
        "--bootstrap-fraction",
        "0.5",
    ]
    assert exit_code([*args, "--out", str(out), "--segmentation", str(seg)]) == 0
    image = Image.open(out)
    assert image.size == (256, 128)
    meta = json.loads(image.text["multidiffusion"])
    assert meta["mode"] == "regions" and meta["seed"] == 4 and meta["bootstrap_fraction"] == 0.5
    assert meta["regions"][0]["box"] == [16, 16, 112, 112] and meta["regions"][1]["guidance_scale"] == 5.0
    assert meta["background"]["prompt"] == "a sandy beach"
    legend = json.loads(Image.open(seg).text["legend"])
    assert set(legend.values()) == {"a sandy beach", "ball", "sea"}
    pixels = Image.open(seg).convert("RGB")
    assert pixels.getpixel((50, 50)) != pixels.getpixel((200, 100)) != pixels.getpixel((200, 10))

    again = layout_dir / "again.png"
    assert exit_code([*args, "--out", str(again)]) == 0
    assert Image.open(again).tobytes() == image.tobytes()  # the layout's seed makes it reproducible


@pytest.mark.parametrize("example", ["boxes.json", "masks.json"])
def test_examples_are_valid_layouts(example):
    from multidiffusion.pipeline.inputs.region_file import load_region_file
    from multidiffusion.pipeline.modes.regions import check_regions

    layout = load_region_file(ROOT / "examples" / example)
    check_regions(layout.regions, layout.background, 0.2)
    assert layout.width == 1024 and layout.height == 512 and len(layout.regions) == 2


def _edit(**changes):
    layout = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        target = layout
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is ...:
            del target[keys[-1] if not keys[-1].isdigit() else int(keys[-1])]
        else:
            target[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return layout


BAD_LAYOUTS = [
    (_edit(regions__0__box=[0, 0, 300, 10]), r"regions[0].box [0, 0, 300, 10] must satisfy"),
    (_edit(regions__0__box=[10, 10, 10, 20]), "regions[0].box"),
    (_edit(regions__0__box="big"), "regions[0].box must be four whole pixel numbers"),
    (_edit(regions__1__mask="missing.png"), "regions[1].mask: cannot read mask image"),
    (_edit(regions__1__mask="small.png"), "regions[1].mask is 10×10 px (width×height); the canvas is 256×128 px"),
    (_edit(regions__1__mask="notes.txt"), "regions[1].mask: cannot read mask image"),
    (_edit(regions__0__colour="red"), "unknown key regions[0].colour"),
    (_edit(colour="red"), "unknown key colour"),
    (_edit(regions=[], background=...), "no regions and no background"),
    (_edit(regions__1__name="ball"), "name 'ball' is used more than once"),
    (_edit(regions__0__prompt=...), "regions[0].prompt is required"),
    (_edit(regions__0__mask="sea.png"), "regions[0]: give exactly one of mask and box"),
    (_edit(width=100), "width must be a multiple of 8"),
    (_edit(width=-8), "width must be a positive whole number"),
    (_edit(regions__0__guidance_scale=-2), "guidance scale must be ≥ 0"),
    (_edit(regions__0__weight=0), "regions[0].weight must be > 0"),
    (_edit(seed="x"), "seed must be a whole number"),
]


@pytest.mark.parametrize(("layout", "message"), BAD_LAYOUTS)
def test_bad_layouts_exit_2_without_file(small_folder, layout_dir, capfd, layout, message):
    Image.new("L", (10, 10)).save(layout_dir / "small.png")
    (layout_dir / "notes.txt").write_text("not an image")
    path = write_layout(layout_dir, layout)
    out, seg = layout_dir / "out.png", layout_dir / "seg.png"
    code = exit_code(
        [
            "regions",
            "--regions-file",
            str(path),
            "--model",
            str(small_folder),
            "--out",
            str(out),
            "--segmentation",
            str(seg),
            *FAST,
        ]
    )
    assert code == 2
    assert_one_line_error(capfd, message)
    assert not out.exists() and not seg.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bootstrap-fraction", "1.5"], "bootstrap fraction must be in [0, 1]"),
        (["--bootstrap-fraction", "-0.1"], "bootstrap fraction must be in [0, 1]"),
        (["--segmentation", "seg.jpg"], "must end in .png"),
        (["--segmentation", "OUT"], "must name a different file"),
        (["--layout-missing"], "unrecognized arguments"),
    ],
)
def test_bad_region_options_exit_2(small_folder, layout_dir, capfd, extra, message):
    path = write_layout(layout_dir, BASE)
    out = layout_dir / "out.png"
    extra = [str(out) if e == "OUT" else str(layout_dir / e) if e.endswith(".jpg") else e for e in extra]
    code = exit_code(
        ["regions", "--regions-file", str(path), "--model", str(small_folder), "--out", str(out), *FAST, *extra]
    )
    assert code == 2
    assert_one_line_error(capfd, message)
    assert not out.exists()


def test_unreadable_layout_file(small_folder, tmp_path, capfd):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert (
        exit_code(
            [
                "regions",
                "--regions-file",
                str(bad),
                "--model",
                str(small_folder),
                "--out",
                str(tmp_path / "o.png"),
                *FAST,
            ]
        )
        == 2
    )
    assert_one_line_error(capfd, "is not valid JSON")
    assert (
        exit_code(
            [
                "regions",
                "--regions-file",
                str(tmp_path / "none.json"),
                "--model",
                str(small_folder),
                "--out",
                str(tmp_path / "o.png"),
                *FAST,
            ]
        )
        == 2
    )
    assert_one_line_error(capfd, "cannot read layout file")
    shutil.rmtree(tmp_path, ignore_errors=True)
