"""A region file names files only inside its root (its own folder, or the folder the caller gives): names that lead
out (absolute, ``..``, symbolic links) are refused before anything is opened, with one line that is the same
whether the file exists or not, and messages name files as the region file writes them, never by their full
path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.inputs.region_file import load_region_file, named_files, parse_region_file

ROOT = Path(__file__).resolve().parents[3]


def _mask(path: Path, size: tuple[int, int] = (32, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(path)
    return path


def _layout(folder: Path, **top: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "layout.json"
    path.write_text(json.dumps({"width": 32, "height": 16, "background": "sky", **top}))
    return path


def _refusal(path: Path, root: Path | None = None) -> str:
    with pytest.raises(InvalidInputError) as caught:
        load_region_file(path, root=root)
    return str(caught.value)


def test_a_mask_inside_the_folder_loads_also_through_dot_dot(tmp_path):
    _mask(tmp_path / "layout" / "masks" / "sea.png")
    path = _layout(tmp_path / "layout", regions=[{"prompt": "sea", "mask": "other/../masks/sea.png"}])
    layout = load_region_file(path)
    assert layout.regions[0].mask is not None and tuple(layout.regions[0].mask.shape) == (16, 32)


@pytest.mark.parametrize("key", ["mask", "init_image", "init_image.mask", "control.image", "loras"])
def test_names_outside_the_folder_are_refused_alike_whether_they_exist_or_not(tmp_path, key):
    """An absolute path and a ``..`` path, each to an existing picture and to a missing one: four names, one line,
    which names neither the file nor any folder."""
    outside = _mask(tmp_path / "secret.png")
    names = [str(outside), str(tmp_path / "missing.png"), "../secret.png", "../missing.png"]
    messages = set()
    for name in names:
        folder = tmp_path / "layout"
        _mask(folder / "ok.png")
        if key == "mask":
            top = {"regions": [{"prompt": "x", "mask": name}]}
        elif key == "init_image":
            top = {"init_image": name}
        elif key == "init_image.mask":
            top = {"init_image": {"path": "ok.png", "mask": name}}
        elif key == "control.image":
            top = {"regions": [{"prompt": "x", "box": [0, 0, 8, 8], "control": [{"model": "a/b", "image": name}]}]}
        else:
            top = {"regions": [{"prompt": "x", "box": [0, 0, 8, 8], "loras": [{"path": name, "scale": 1}]}]}
        messages.add(_refusal(_layout(folder, **top)))
    assert len(messages) == 1, messages
    (message,) = messages
    assert "outside the region file's folder" in message and "\n" not in message
    assert str(tmp_path) not in message and "secret" not in message and "missing" not in message


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    outside = _mask(tmp_path / "secret.png")
    folder = tmp_path / "layout"
    folder.mkdir()
    os.symlink(outside, folder / "link.png")
    os.symlink(tmp_path, folder / "up")
    for name in ("link.png", "up/secret.png"):
        path = _layout(folder, regions=[{"prompt": "x", "mask": name}])
        assert "outside the region file's folder" in _refusal(path)


def test_a_given_root_confines_a_layout_in_a_subfolder(tmp_path):
    """With a root above the layout's folder, ``..`` may climb up to the root but not past it, and an absolute
    name inside the root is refused too (a layout does not know where it is stored)."""
    _mask(tmp_path / "root" / "shared.png")
    path = _layout(tmp_path / "root" / "sub", regions=[{"prompt": "x", "mask": "../shared.png"}])
    assert load_region_file(path, root=tmp_path / "root").regions[0].mask is not None
    assert "outside" in _refusal(path)  # its own folder by default
    inside_but_absolute = str(tmp_path / "root" / "shared.png")
    path = _layout(tmp_path / "root" / "sub", regions=[{"prompt": "x", "mask": inside_but_absolute}])
    assert "outside" in _refusal(path, root=tmp_path / "root")


def test_without_a_root_an_absolute_name_inside_the_folder_is_taken(tmp_path):
    """The command line's case: a generated region file may name its own files by absolute path."""
    mask = _mask(tmp_path / "layout" / "sea.png")
    assert load_region_file(_layout(tmp_path / "layout", regions=[{"prompt": "x", "mask": str(mask)}])).regions


def test_messages_name_files_as_the_layout_writes_them(tmp_path):
    folder = tmp_path / "layout"
    (folder / "masks").mkdir(parents=True)
    (folder / "masks" / "text.png").write_text("not a picture")
    for name, reason in (("masks/missing.png", "No such file"), ("masks/text.png", "not an image file")):
        message = _refusal(_layout(folder, regions=[{"prompt": "x", "mask": name}]))
        assert f"regions[0].mask: cannot read mask image {name!r}" in message and reason in message
        assert str(tmp_path) not in message
    message = _refusal(_layout(folder, init_image="masks/missing.png"))
    assert "'masks/missing.png'" in message and str(tmp_path) not in message
    message = _refusal(_layout(folder, init_image={"path": "masks/missing.png"}), root=folder)
    assert "'masks/missing.png'" in message


def test_a_controlnet_is_a_folder_inside_or_a_hub_id(tmp_path):
    folder = tmp_path / "layout"
    (folder / "canny").mkdir(parents=True)
    _mask(folder / "edges.png")

    def control(model: str) -> dict[str, object]:
        return {"prompt": "x", "box": [0, 0, 8, 8], "control": [{"model": model, "image": "edges.png"}]}

    specs = load_region_file(_layout(folder, regions=[control("canny"), control("lllyasviel/canny")]))
    assert [r.control[0].model for r in specs.regions] == [str((folder / "canny").resolve()), "lllyasviel/canny"]
    assert specs.regions[0].control[0].image == str((folder / "edges.png").resolve())
    assert "no folder in the region file's folder and no hub id" in _refusal(_layout(folder, regions=[control("x")]))
    assert "outside" in _refusal(_layout(folder, regions=[control("../canny")]))


def test_the_example_region_file_still_loads():
    layout = load_region_file(ROOT / "examples" / "masks.json")
    assert any(region.mask is not None for region in layout.regions)


def test_parse_region_file_confines_to_its_base_by_default(tmp_path):
    outside = _mask(tmp_path / "secret.png")
    (tmp_path / "base").mkdir()
    document = {"width": 32, "height": 16, "regions": [{"prompt": "x", "mask": str(outside)}]}
    with pytest.raises(InvalidInputError, match="outside the region file's folder"):
        parse_region_file(document, tmp_path / "base")


def test_named_files_lists_what_a_layout_reads():
    document = {
        "regions": [
            {"mask": "a.png", "control": [{"image": "c.png"}, "junk"]},
            {"box": [0, 0, 1, 1], "loras": ["l.safetensors"]},
            7,
        ],
        "init_image": {"path": "i.png", "mask": "m.png"},
    }
    assert named_files(document) == {"a.png", "c.png", "i.png", "m.png"}
    assert named_files({"init_image": "i.png", "regions": "x"}) == {"i.png"}
    assert named_files([1, 2]) == set()
