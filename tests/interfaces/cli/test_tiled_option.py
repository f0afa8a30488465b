"""``--tiled-vae/--no-tiled-vae`` on the command line: forced tiling decodes the same image, toy refuses."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from multidiffusion.interfaces.cli.main import main
from tests.helpers.cli import FAST, assert_one_line_error


@pytest.mark.float_sensitive
def test_forced_tiled_decode_matches_the_full_decode(small_folder, tmp_path, one_thread):
    outs = {}
    for flag in ("--tiled-vae", "--no-tiled-vae"):
        out = tmp_path / f"{flag}.png"
        assert (
            main(["panorama", "sky", "--model", str(small_folder), "--out", str(out), "--seed", "2", *FAST, flag]) == 0
        )
        outs[flag] = np.asarray(Image.open(out), dtype=np.int16)
    # 8-bit images of the same latents: tiled and full decodes differ by ~1e-5, at most one level after rounding
    assert np.abs(outs["--tiled-vae"] - outs["--no-tiled-vae"]).max() <= 1


def test_tiled_vae_on_the_toy_model_is_a_clear_error(tmp_path, capfd):
    out = tmp_path / "x.png"
    argv = ["panorama", "sky", "--model", "toy", "--out", str(out), "--height", "16", "--width", "64", "-q"]
    assert main([*argv, "--tiled-vae"]) == 2
    assert_one_line_error(capfd, "has no VAE to tile")
    assert not out.exists()
    assert main([*argv, "--no-tiled-vae", "--steps", "2"]) == 0  # nothing to turn off: accepted
