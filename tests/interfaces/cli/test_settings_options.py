"""The grouped settings' options: one spelling per setting (``--sync-stop-step``, ``--layout``, ``--tile``,
``--regions-file``), and the older spellings still working with one warning line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multidiffusion.interfaces.cli import settings_options
from tests.helpers.cli import exit_code, pixels, recipe

TOY = ["--model", "toy", "--height", "32", "--width", "96", "--window", "32", "--steps", "3", "--seed", "4", "-q"]


@pytest.fixture(autouse=True)
def fresh_warnings():
    settings_options._warned.clear()


def _run(argv: list[str], out: Path, capfd) -> tuple[bytes, dict, str]:
    assert exit_code([*argv, "--out", str(out)]) == 0
    return pixels(out), recipe(out), capfd.readouterr().err


SYNC = ["--sync", "--sync-loss", "builtin"]


@pytest.mark.parametrize(
    ("flag", "old", "new"),
    [
        ("--sync-stop", [*SYNC, "--sync-stop", "2"], [*SYNC, "--sync-stop-step", "2"]),
        ("--sync-chunk", [*SYNC, "--sync-chunk", "2"], [*SYNC, "--sync-chunk-size", "2"]),
        ("--view-layout", ["--view-layout", "half-overlap"], ["--layout", "half-overlap"]),
        ("--circular", ["--circular"], ["--tile", "x"]),
    ],
)
def test_old_panorama_spellings_make_the_same_image_and_warn_once(tmp_path, capfd, flag, old, new):
    argv = ["panorama", "a red field", *TOY]
    new_pixels, new_recipe, new_err = _run([*argv, *new], tmp_path / "new.png", capfd)
    old_pixels, old_recipe, old_err = _run([*argv, *old], tmp_path / "old.png", capfd)
    assert old_pixels == new_pixels and old_recipe == new_recipe
    assert "deprecated" not in new_err
    warnings = [line for line in old_err.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {flag} is deprecated; use "), old_err


def test_region_file_has_its_own_name(tmp_path, capfd):
    layout = tmp_path / "regions.json"
    layout.write_text(json.dumps({"width": 96, "height": 32, "background": {"prompt": "blue"},
                                  "regions": [{"prompt": "red", "box": [0, 0, 48, 32]}]}))  # fmt: skip
    argv = ["regions", *TOY[:2], *TOY[6:]]  # the canvas size is the region file's
    new_pixels, _, new_err = _run([*argv, "--regions-file", str(layout)], tmp_path / "new.png", capfd)
    old_pixels, _, old_err = _run([*argv, "--layout", str(layout)], tmp_path / "old.png", capfd)
    assert new_pixels == old_pixels and "deprecated" not in new_err
    assert "warning: --layout FILE is deprecated; use --regions-file FILE" in old_err
    both = ["--regions-file", str(layout), "--layout", "half-overlap"]  # --layout NAME is the view layout here too
    assert exit_code([*argv, *both, "--out", str(tmp_path / "both.png")]) == 0
    assert recipe(tmp_path / "both.png")["layout"] == "half-overlap"
    capfd.readouterr()
    assert exit_code([*argv, "--out", str(tmp_path / "none.png")]) == 2
    assert "--regions-file is required" in capfd.readouterr().err
