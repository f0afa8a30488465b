"""Named layouts and speed options through the pipeline and the CLI: recorded, validated, same images."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli.main import main
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.cli import assert_one_line_error, exit_code
from tests.helpers.spies import counted_rows

KW = dict(height=16, width=96, window=16, num_inference_steps=4, output_type="pt", progress=False)


@pytest.fixture(scope="module")
def toy():
    return MultiDiffusionPipeline.from_pretrained("toy", device="cpu")


# shifted tiles record their stride as the window: non-overlapping tiles, moved every step (issue item 14)
@pytest.mark.parametrize(("layout", "stride", "evaluations"), [("half-overlap", 8, 11), ("shifted", 16, None)])
def test_named_layout_runs_and_is_recorded(toy, one_thread, layout, stride, evaluations):
    with counted_rows(toy.model) as calls:
        out = toy("sky", layout=layout, generator=torch.Generator().manual_seed(0), **KW)
    s = out.metadata.settings
    assert (s.views.layout, s.views.stride, s.views.weights) == (layout, stride, "gaussian")
    assert torch.isfinite(out.latents).all()
    if evaluations is not None:
        assert sum(calls) == evaluations * 4  # views per step × steps (guidance 1: one row per view)
    else:
        assert sum(calls) < 11 * 4  # shifted tiles: fewer views than the half-overlap layout


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layout="diagonal"), "unknown layout 'diagonal'; choose one of: half-overlap"),
        (dict(layout="shifted", stride=8), "sets the stride and weights itself"),
        (dict(layout="shifted", weights="feathered"), "sets the stride and weights itself"),
        (dict(layout="shifted", sync=True), "SyncDiffusion runs on a fixed sliding-window layout"),
    ],
)
def test_bad_layout_arguments(toy, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        toy("sky", **{**KW, **kwargs})


def test_cli_view_layout_and_speed_flags(small_folder, tmp_path, capfd, one_thread):
    out = tmp_path / "q.png"
    argv = ["panorama", "sky", "--model", str(small_folder), "--height", "128", "--width", "384", "--steps", "2"]
    assert main([*argv, "-q", "--out", str(out), "--layout", "quarter-overlap", "--channels-last"]) == 0
    meta = json.loads(Image.open(out).text["multidiffusion"])
    assert meta["layout"] == "quarter-overlap" and meta["stride"] == 96 and meta["weights"] == "gaussian"
    bad = tmp_path / "bad.png"
    assert exit_code([*argv, "-q", "--out", str(bad), "--layout", "shifted", "--stride", "64"]) == 2
    assert_one_line_error(capfd, "sets the stride and weights itself")
    assert exit_code([*argv, "-q", "--out", str(bad), "--layout", "zigzag"]) == 2
    assert_one_line_error(capfd, "invalid choice")
    assert not bad.exists()
