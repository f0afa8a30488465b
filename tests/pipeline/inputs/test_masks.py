"""Recorded region masks (issue 31, item 8): sizes checked before anything is decoded, data inflated no further
than the declared size, so a crafted mask costs the memory of the canvas's mask at most."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib

import pytest
import torch

import multidiffusion.pipeline.inputs.masks as masks
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.inputs.image_files import MAX_IMAGE_PX
from multidiffusion.pipeline.inputs.masks import decode_mask, encode_mask
from tests.pipeline.settings.recipe_files import zeros_zlib

GIB = 1 << 30
MAX_EXTRA_RSS_MB = 300  # generous: the record's own text is ~10 MB; what the issue saw was 2.2–4.2 GB


def record(data: bytes, size: list[int]) -> dict:
    return {"mask_size": size, "mask_data": base64.b64encode(data).decode()}


def refused(rec: dict, canvas: tuple[int, int] | None = (32, 96)) -> str:
    with pytest.raises(InvalidInputError) as info:
        decode_mask(rec, "regions[0]", canvas)
    assert "\n" not in str(info.value) and str(info.value).startswith("regions[0]: ")
    return str(info.value)


def test_a_mask_round_trips_bit_for_bit():
    mask = torch.rand(32, 96)
    assert torch.equal(decode_mask(encode_mask(mask), "m", (32, 96)), mask)
    assert torch.equal(decode_mask(encode_mask(mask), "m"), mask)


def test_a_mask_of_the_wrong_shape_is_refused_before_any_decoding(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(masks.base64, "b64decode", never)
    monkeypatch.setattr(masks.zlib, "decompressobj", never)
    one_gib = record(zeros_zlib(GIB), [16384, 16384])
    assert "is 16384×16384 px (width×height); the canvas is 96×32 px" in refused(one_gib)
    assert "the limit is" in refused(record(b"", [32768, 65536]), canvas=None)  # 8 GiB declared, no canvas given
    assert "more than a 96×32 mask needs" in refused({**one_gib, "mask_size": [32, 96]})


def test_data_that_inflates_past_its_declared_size_is_stopped_at_that_size(monkeypatch):
    sizes = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self):
            self.inner = real()

        def decompress(self, data, max_length=0):
            out = self.inner.decompress(data, max_length)
            sizes.append((max_length, len(out)))
            return out

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(masks.zlib, "decompressobj", Spy)
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB in 64 kB: longer than any 32×96 mask's data, refused unread
    assert "more than a 96×32 mask needs" in refused(record(bomb, [32, 96]))
    small_bomb = zlib.compress(bytes(1 << 20), 9)  # 1 MiB in 1 kB: short enough to pass the length check
    assert "holds more data than its 96×32 px" in refused(record(small_bomb, [32, 96]))
    assert sizes == [(32 * 96 * 4 + 1, 32 * 96 * 4 + 1)]  # inflated no further than the mask's size + 1 byte


@pytest.mark.parametrize(
    ("rec", "message"),
    [
        ({"mask_data": ""}, "mask_size must be [height, width]"),
        ({"mask_size": [32, "96"], "mask_data": ""}, "mask_size must be [height, width]"),
        ({"mask_size": [32, True], "mask_data": ""}, "mask_size must be [height, width]"),
        ({"mask_size": [0, 96], "mask_data": ""}, "mask_size must be [height, width]"),
        ({"mask_size": [32, 96], "mask_data": 5}, "must be a base64 string"),
        ({"mask_size": [32, 96], "mask_data": "not base64!"}, "is not base64"),
        (record(b"not zlib", [32, 96]), "is not zlib-compressed data"),
        (record(zlib.compress(bytes(100)), [32, 96]), "holds less data than"),
        (record(zlib.compress(bytes(32 * 96 * 4))[:-10], [32, 96]), "holds less data than"),
        (record(zlib.compress(bytes(32 * 96 * 4)) + b"tail", [32, 96]), "holds more data than"),
    ],
)
def test_a_damaged_record_is_one_line(rec, message):
    assert message in refused(rec)


def test_the_pixel_limit_applies_without_a_canvas():
    side = int(MAX_IMAGE_PX**0.5) + 1
    assert "the limit is" in refused(record(b"", [side, side]), canvas=None)


PEAK_SCRIPT = """
import json, sys
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.inputs.masks import decode_mask
canvas = json.loads(sys.argv[2])
def status_kb(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
open("/proc/self/clear_refs", "w").write("5")  # the peak restarts here: the imports' own would hide what follows
before = status_kb("VmRSS")
record = json.loads(open(sys.argv[1]).read())
try:
    decode_mask(record, "regions[0]", None if canvas is None else tuple(canvas))
    message = None
except InvalidInputError as exc:
    message = str(exc)
after = status_kb("VmHWM")
print(json.dumps({"message": message, "extra_mb": (after - before) / 1024}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads and resets the peak in /proc/self")
@pytest.mark.parametrize(
    ("size", "declared", "canvas", "message"),
    [
        (GIB, [16384, 16384], [32, 96], "the canvas is 96×32 px"),  # 1 GiB of the wrong shape
        (8 * GIB, [32768, 65536], [32, 96], "the canvas is 96×32 px"),  # 8 GiB of the wrong shape
        (8 * GIB, [32768, 65536], None, "the limit is"),  # 8 GiB with no canvas to compare: the pixel limit
        (GIB, [32, 96], [32, 96], "more than a 96×32 mask needs"),  # the right shape, 1 GiB of data
    ],
)
def test_a_huge_recorded_mask_is_refused_in_little_memory(tmp_path, size, declared, canvas, message):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record(zeros_zlib(size), declared)))
    run = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), json.dumps(canvas)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert message in result["message"]
    print(f"peak RSS over the baseline: {result['extra_mb']:.0f} MB")
    assert result["extra_mb"] < MAX_EXTRA_RSS_MB, result
