"""``multidiffusion eval-suite`` on the toy model: generates the protocol, evaluates each (setting, size), resumes."""

from __future__ import annotations

import json

from tests.helpers.cli import exit_code, one_error_line, recipe
from tests.helpers.tiny_metrics import save_features, tiny_clip_folder


def test_suite_generates_evaluates_and_resumes(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n\na blue box\n")
    features = save_features(tmp_path / "features.pt")
    clip = tiny_clip_folder(tmp_path / "clip")
    out = tmp_path / "suite"
    argv = ["eval-suite", "--model", "toy", "--prompts", str(prompts), "--out", str(out), "--per-prompt", "2"]
    argv += ["--sizes", "64x192", "--settings", "multidiffusion,half-overlap,global-view", "--steps", "3", "-q"]
    argv += ["--features", str(features), "--clip", str(clip)]
    assert exit_code(argv) == 0
    assert len(list((out / "reference").glob("*.png"))) == 4  # 2 prompts × 2 samples, 64 × 64 (the toy's view)
    for setting in ("multidiffusion-64x192", "half-overlap-64x192", "global-view-64x192"):
        assert len(list((out / setting).glob("*.png"))) == 4
    assert recipe(next((out / "global-view-64x192").glob("*.png")))["global_view"] == 4.0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["setting"], r["size"], r["images"]) for r in rows] == [
        ("multidiffusion", "64x192", 4),
        ("half-overlap", "64x192", 4),
        ("global-view", "64x192", 4),
    ]
    for row in rows:  # with the tiny extractor and CLIP every set metric has a number
        assert all(isinstance(row[k], float) for k in ("fid", "kid", "giqa", "clip_score")), row
    assert "| setting | size | images |" in (out / "results.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert exit_code(argv) == 0  # resumes: nothing is made again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps


def test_bad_suite_options_are_one_line(tmp_path, capfd):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n")
    base = ["eval-suite", "--model", "toy", "--prompts", str(prompts), "--out", str(tmp_path / "o"), "-q"]
    for extra, message in (
        (["--sizes", "64by192"], "--sizes takes HEIGHTxWIDTH"),
        (["--settings", "fancy"], "--settings takes some of"),
        (["--per-prompt", "0"], "--per-prompt must be ≥ 1"),
    ):
        assert exit_code([*base, *extra]) == 2
        assert message in one_error_line(capfd)
    assert exit_code(["eval-suite", "--model", "toy", "--prompts", str(tmp_path / "none"), "--out", "o", "-q"]) == 2
    assert "does not exist" in one_error_line(capfd)
