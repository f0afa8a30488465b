"""PNGs made before the redesign of issue 25 must still reproduce after it: ``multidiffusion reproduce`` on each
reference PNG in ``data/pngs/`` (made by the command line on the toy model by ``record_golden.py``) must give its
pixels again.

That checks both that the outputs did not change and that the recipes old PNGs carry are still read the same way
(a renamed setting or module must not break an image someone made before the move). Bit-identical on the recorded
kernel path (same CPU capability and torch version, ``data/golden.json``); elsewhere within 2/255 per pixel (the
8-bit rounding of values that differ by float rounding).
"""

from __future__ import annotations

import json

import pytest

import tests.regression.golden_cases as g

pytestmark = pytest.mark.float_sensitive

MAX_LEVELS_OFF_PATH = 2  # of 255, off the recorded kernel path only


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(g.GOLDEN_JSON.read_text())["pngs"]


def test_every_png_is_recorded(record):
    assert set(record) == set(g.PNGS) == {p.name for p in g.PNG_DIR.glob("*.png")}


@pytest.mark.parametrize("name", list(g.PNGS))
def test_old_png_reproduces(record, name, tmp_path):
    stored, meta = g.PNG_DIR / name, record[name]
    again = tmp_path / name
    assert g.cli(["reproduce", str(stored), "--out", str(again), "-q"]) == 0
    a, b = g.png_pixels(again), g.png_pixels(stored)
    assert a.shape == b.shape, f"{name}: {tuple(a.shape)} vs {tuple(b.shape)}"
    worst = int((a.int() - b.int()).abs().max())
    where = f"{name} ({meta['description']}); recorded on {meta['cpu_capability']} torch {meta['torch']}"
    if g.same_kernel_path(meta):
        assert worst == 0, f"{where}: pixels not bit-identical on the recorded kernel path, max diff {worst}/255"
    else:
        assert worst <= MAX_LEVELS_OFF_PATH, f"{where}: max pixel diff {worst}/255 > {MAX_LEVELS_OFF_PATH}/255"
