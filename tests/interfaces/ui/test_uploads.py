"""Layouts uploaded to the UI (issue 31, items 2 and 3): they name only files inside their own upload, messages
show no server path nor whether a server file exists, and a zip is checked from its directory (members, sizes,
ratio) and unpacked with caps on the bytes actually written."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui import session as ui_session
from multidiffusion.interfaces.ui import uploads
from multidiffusion.interfaces.ui.session import layout_to_paint
from multidiffusion.interfaces.ui.uploads import copy_capped, unpack_layout


def _png(size: tuple[int, int] = (48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _layout(mask: str = "mask.png", **top: object) -> str:
    regions = [{"name": "red", "prompt": "a ball", "mask": mask}]
    return json.dumps({"width": 48, "height": 32, "regions": regions, **top})


def _zip(path: Path, members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(InvalidInputError) as caught:
        layout_to_paint(str(path))
    message = str(caught.value)
    assert "\n" not in message
    return message


def _written(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


# item 2: server files


@pytest.mark.parametrize("form", ["json", "zip"])
def test_an_upload_cannot_read_a_server_file_nor_tell_whether_one_exists(tmp_path, form):
    """A server-side picture (existing) and a missing one, by absolute path and by ``..``: the same one line, with
    neither name nor any server folder in it, and no pixel of the server file painted."""
    server = tmp_path / "server"
    server.mkdir()
    (server / "secret.png").write_bytes(_png())
    (server / "shadow").write_text("root:x:0:0")
    names = [str(server / "secret.png"), str(server / "shadow"), str(server / "missing.png")]
    names += ["../server/secret.png", "../../../../../../etc/passwd", "../nothing.png"]
    messages = set()
    for i, name in enumerate(names):
        if form == "json":
            upload = tmp_path / f"upload{i}" / "layout.json"
            upload.parent.mkdir()
            upload.write_text(_layout(name))
        else:
            upload = _zip(tmp_path / f"upload{i}.zip", {"layout.json": _layout(name), "mask.png": _png()})
        messages.add(_refusal(upload))
    assert len(messages) == 1, messages
    (message,) = messages
    assert message.startswith("regions[0].mask names a file outside the region file's folder")
    assert str(tmp_path) not in message and "secret" not in message and "/" not in message


def test_a_layout_json_upload_names_nothing_beside_it(tmp_path):
    """A plain layout.json is read alone, in a folder of its own: a file beside the upload on the server is not
    there for it, and the message names the mask as the layout writes it."""
    (tmp_path / "mask.png").write_bytes(_png())  # beside the upload on the server
    upload = tmp_path / "layout.json"
    upload.write_text(_layout("mask.png"))
    message = _refusal(upload)
    assert message == "regions[0].mask: cannot read mask image 'mask.png': No such file or directory"


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"layout.json": _layout(), "mask.png": "not a picture"}, "the layout zip's 'mask.png' is not a picture PIL"),
        ({"layout.json": "{"}, "is not valid JSON"),
        (
            {"layout.json": _layout(), "mask.png": _png((40, 40))},
            "regions[0].mask is 40×40 px but the canvas is 48×32 px",
        ),
        ({"mask.png": _png()}, "the layout zip holds no layout.json"),
    ],
)
def test_messages_about_an_upload_show_no_server_path(tmp_path, members, expected):
    message = _refusal(_zip(tmp_path / "l.zip", members))
    assert str(tmp_path) not in message and "/tmp" not in message and "multidiffusion-layout" not in message
    assert expected in message


def test_only_the_layout_and_the_files_it_names_are_unpacked(tmp_path):
    upload = _zip(tmp_path / "l.zip", {"layout.json": _layout(), "mask.png": _png(), "other.bin": b"x" * 1000})
    folder = tmp_path / "out"
    folder.mkdir()
    unpack_layout(upload, folder, 2**20)
    assert sorted(p.name for p in folder.iterdir()) == ["layout.json", "mask.png"]
    layer, prompts, _ = layout_to_paint(str(upload))
    assert layer.shape == (32, 48, 4) and prompts == {"red": "a ball"}


# item 3: zip bombs


def test_a_zip_bomb_is_refused_from_its_directory_before_anything_is_written(tmp_path):
    """64 MiB of zeros packs into ~64 kB: refused on its declared size and ratio, with nothing written."""
    bomb = _zip(tmp_path / "bomb.zip", {"layout.json": _layout(), "mask.png": bytes(64 * 2**20)})
    assert bomb.stat().st_size < 200_000
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match=r"'mask.png' is 64 MiB unpacked; the limit is 32 MiB a file"):
        unpack_layout(bomb, folder, 2**24)
    assert _written(folder) == 0
    assert "64 MiB unpacked" in _refusal(bomb)


def test_a_member_that_packs_too_well_is_refused(tmp_path):
    """2 MiB of zeros: under the size caps, but ~500 times smaller packed than unpacked."""
    upload = _zip(tmp_path / "l.zip", {"layout.json": _layout(), "mask.png": bytes(2 * 2**20)})
    assert "times larger than it is packed; the limit is 100" in _refusal(upload)


def test_the_total_and_the_count_of_members_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_TOTAL_BYTES", 3 * 2**20)
    stored = {"layout.json": _layout(), **{f"x{i}.bin": bytes(2**20) for i in range(4)}}
    upload = _zip(tmp_path / "many.zip", stored, zipfile.ZIP_STORED)  # ratio 1: only the total is over
    assert "unpacks to 4 MiB; the limit is 3 MiB in all" in _refusal(upload)
    monkeypatch.setattr(uploads, "MAX_ZIP_MEMBERS", 3)
    assert "holds 5 files; a layout zip holds at most 3" in _refusal(upload)


def test_the_count_is_read_from_the_end_record_before_zipfile_reads_the_directory(tmp_path, monkeypatch):
    """A 20 MB upload can hold ~200,000 empty members; zipfile would spend seconds and ~120 MB building its list."""
    upload = tmp_path / "many.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        archive.writestr("layout.json", _layout())
        for i in range(2000):
            archive.writestr(f"x{i}", b"")
        archive.comment = b"a comment after the record"

    def no_directory(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile read the directory")

    monkeypatch.setattr(uploads.zipfile, "ZipFile", no_directory)
    assert "the layout zip holds 2,001 files; a layout zip holds at most 1024" in _refusal(upload)
    assert uploads.directory_count(upload) == 2001


def test_a_zip_whose_directory_lies_about_a_size_writes_no_more_than_it_declared(tmp_path):
    """The directory says the mask is 1000 bytes; it unpacks to 5 MiB. Reading stops at the declared size and the
    mismatch is refused in one line."""
    data = bytearray(_zip(tmp_path / "l.zip", {"layout.json": _layout(), "mask.png": bytes(5 * 2**20)}).read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the mask's entry in the central directory, written last
    assert struct.unpack("<I", data[entry + 24 : entry + 28])[0] == 5 * 2**20
    data[entry + 24 : entry + 28] = struct.pack("<I", 1000)
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(data))
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match=r"the layout zip is damaged: Bad CRC-32 for file 'mask\.png'"):
        unpack_layout(liar, folder, 2**24)
    assert (folder / "mask.png").stat().st_size <= 1000


def test_copying_stops_at_the_cap_whatever_was_declared(tmp_path):
    out = io.BytesIO()
    with pytest.raises(InvalidInputError, match=r"'mask\.png' unpacks to more than 1\.0 MiB"):
        copy_capped(io.BytesIO(bytes(3 * 2**20)), out, 2**20, "'mask.png'")
    assert len(out.getvalue()) <= 2**20
    assert copy_capped(io.BytesIO(b"abc"), io.BytesIO(), 3, "x") == 3


# item 5: what the page computes from an upload


def test_an_imported_canvas_and_its_masks_are_capped_before_they_are_decoded(tmp_path, monkeypatch):
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"width": 30000, "height": 30000, "regions": [{"prompt": "x", "box": [0, 0, 1, 1]}]}))
    assert "the layout's canvas is 30000×30000 px; the page paints up to 16,777,216 px" in _refusal(huge)
    monkeypatch.setattr(ui_session, "MAX_PAINT_PX", 48 * 32)
    upload = _zip(tmp_path / "l.zip", {"layout.json": _layout(), "mask.png": _png((64, 64))})
    assert "the layout zip's 'mask.png' is 64×64 px; the limit is 1,536 px" in _refusal(upload)
