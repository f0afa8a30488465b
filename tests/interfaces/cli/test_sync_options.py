"""``panorama --sync`` and ``eval-coherence`` on the command line: metadata, bad input, the metrics."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from multidiffusion.interfaces.cli.main import main
from tests.helpers.cli import assert_one_line_error, exit_code

TOY = ["--model", "toy", "--height", "16", "--width", "96", "--window", "16", "--stride", "8", "--steps", "4", "-q"]


def test_panorama_sync_records_its_settings(tmp_path, capfd, one_thread):
    out = tmp_path / "sync.png"
    argv = ["panorama", "red or blue", "--out", str(out), "--seed", "1", *TOY, "--sync", "--sync-stop-step", "3"]
    argv.remove("-q")  # -q silences the notice under test
    with pytest.warns(UserWarning, match="LPIPS is not available.*using the built-in") as caught:
        assert main(argv) == 0
    assert len(caught) == 1
    notice = warnings.formatwarning(caught[0].message, UserWarning, "x.py", 1)  # as the CLI prints it
    assert notice.startswith("warning: LPIPS is not available") and notice.count("\n") == 1
    meta = json.loads(Image.open(out).text["multidiffusion"])
    assert meta["sync"] is True and meta["sync_loss"] == "builtin" and meta["sync_anchor"] == 5
    assert (meta["sync_weight"], meta["sync_decay"], meta["sync_stop_step"], meta["sync_every"]) == (20.0, 0.95, 3, 1)
    assert "SyncDiffusion: weight 20" in Image.open(out).text["parameters"]


BAD = [
    (["--sync-loss", "mse"], "invalid choice"),
    (["--sync-anchor", "11"], "sync anchor view 11 is out of range: this layout has 11 views"),
    (["--sync-anchor", "left"], "must be 'center' or a view index"),
    (["--sync-anchor", "-1"], "sync anchor must be 'center' or a view index ≥ 0"),
    (["--sync-weight", "-1"], "sync weight must be a finite number ≥ 0"),
    (["--sync-decay", "0"], "sync decay must be in (0, 1]"),
    (["--sync-decay", "1.5"], "sync decay must be in (0, 1]"),
    (["--sync-stop-step", "-2"], "sync stop step must be an integer ≥ 0"),
    (["--sync-every", "0"], "sync every must be an integer ≥ 1"),
    (["--sync-chunk-size", "0"], "sync chunk size must be an integer ≥ 1"),
    (["--sync-loss", "lpips"], "LPIPS is not available"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_sync_options_exit_2_without_file(tmp_path, capfd, extra, message):
    out = tmp_path / "x.png"
    assert exit_code(["panorama", "sky", "--out", str(out), *TOY, "--sync", *extra]) == 2
    assert_one_line_error(capfd, message)
    assert not out.exists()


def _save(path, colours) -> str:
    """A 16-px-high image of 16-px blocks of the given RGB colours."""
    image = np.concatenate([np.full((16, 16, 3), c, np.uint8) for c in colours], axis=1)
    Image.fromarray(image).save(path)
    return str(path)


def test_eval_coherence_table_and_json(tmp_path, capsys):
    same = _save(tmp_path / "same.png", [(200, 40, 40)] * 4)
    mixed = _save(tmp_path / "mixed.png", [(200, 40, 40), (40, 40, 200)] * 2)
    assert main(["eval-coherence", same, mixed, "--json", "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["crops"] for r in rows] == [4, 4] and rows[0]["crop"] == 16
    assert rows[0]["colour_spread"] == 0.0 and rows[0]["std_spread"] == 0.0  # identical crops
    # two crops of each colour: the variance of the red channel's crop means is 4/3 · (160/255)², etc.
    assert rows[1]["colour_spread"] == pytest.approx((2 / 3 * 4 / 3 * (160 / 127.5 / 2) ** 2) ** 0.5, rel=1e-6)
    assert rows[0]["intra_lpips"] is None and rows[0]["intra_style"] is None  # no VGG weights here
    assert main(["eval-coherence", same, mixed]) == 0
    captured = capsys.readouterr()
    assert "colour_spread" in captured.out and "n/a" in captured.out
    assert captured.err.count("note: intra-LPIPS and intra-Style need VGG16 weights") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["MISSING"], "does not exist"),
        (["SAME", "--crop", "0"], "--crop must be a positive"),
        (["SAME", "--crop", "40"], "need at least 2"),
        (["TEXT"], "cannot read image"),
    ],
)
def test_eval_coherence_bad_input(tmp_path, capfd, args, message):
    files = {"MISSING": str(tmp_path / "no.png"), "SAME": _save(tmp_path / "s.png", [(0, 0, 0)] * 4)}
    (tmp_path / "t.png").write_text("not an image")
    files["TEXT"] = str(tmp_path / "t.png")
    assert exit_code(["eval-coherence", *[files.get(a, a) for a in args], "-q"]) == 2
    assert_one_line_error(capfd, message)
