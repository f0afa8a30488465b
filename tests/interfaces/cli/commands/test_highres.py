"""``multidiffusion highres`` on the toy model: the final size, every stage kept, the recorded settings, and bad
options refused in one line before the model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.cli import exit_code, one_error_line, pixels, recipe

HIGHRES = ["highres", "red or blue", "--model", "toy", "--window", "16", "--stride", "4", "--steps", "6", "-q"]


def test_highres_writes_the_final_picture_and_keeps_every_stage(tmp_path: Path):
    out, stages = tmp_path / "big.png", tmp_path / "stages"
    argv = [*HIGHRES, "--width", "128", "--height", "64", "--seed", "2", "--keep-stages", str(stages)]
    assert exit_code([*argv, "--out", str(out)]) == 0
    assert Image.open(out).size == (128, 64)
    kept = sorted(stages.iterdir())
    assert [p.name for p in kept] == ["stage-1-of-3.png", "stage-2-of-3.png", "stage-3-of-3.png"]
    assert [Image.open(p).size for p in kept] == [(32, 16), (64, 32), (128, 64)]
    meta = recipe(out)
    assert meta["seed"] == 2 and meta["image"]["mode"] == "highres"
    again = tmp_path / "again.png"
    assert exit_code([*argv, "--out", str(again)]) == 0 and pixels(again) == pixels(out)  # seeded: the same


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strength", "0"], "strength"),
        (["--stages", "99"], "highres stages must be a whole number in 1…8"),
        (["--global-path", "pooled", "--pooled-weight", "-1"], "pooled"),
    ],
)
def test_bad_highres_settings_are_one_line(tmp_path: Path, capfd, extra, message):
    out = tmp_path / "x.png"
    assert exit_code([*HIGHRES, "--width", "128", "--height", "64", *extra, "--out", str(out)]) == 2
    assert not out.exists() and message in one_error_line(capfd)


def test_a_highres_picture_says_how_to_make_it_again(tmp_path: Path, capfd):
    out = tmp_path / "big.png"
    assert exit_code([*HIGHRES, "--width", "64", "--height", "32", "--seed", "5", "--out", str(out)]) == 0
    assert exit_code(["reproduce", str(out), "--out", str(tmp_path / "again.png"), "-q"]) == 2
    assert "run `multidiffusion highres` again with --seed 5" in one_error_line(capfd)
