"""The image-input figures script and benchmark run in their smoke modes and write sane files; no timing is asserted."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def run(script: str, out_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), "--smoke", "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.heavy
def test_image_input_figures_smoke(tmp_path: Path) -> None:
    run("scripts/image_input_figures.py", tmp_path)
    for name in ("upscale", "outpaint", "inpaint", "layout"):
        with Image.open(tmp_path / f"image_inputs_{name}.png") as picture:
            assert picture.mode == "RGB" and min(picture.size) > 16
    data = json.loads((tmp_path / "image_inputs_figures.json").read_text())
    assert data["command"] == "python scripts/image_input_figures.py --smoke"
    checks = data["upscale"]["shrunk_back_vs_input"]
    assert set(checks) == {"Lanczos x2", "strength 0.3", "strength 0.7", "strength 0.7, inversion 4"}
    assert all(math.isfinite(c["psnr_db"]) and -1 <= c["ssim"] <= 1 for c in checks.values())
    # What is kept is the input, to float rounding, away from the feathering (the toy model's codec is the identity).
    assert data["outpaint"]["kept_max_abs_diff"] < 1e-4
    assert data["outpaint"]["circular_kept_max_abs_diff"] < 1e-4
    assert data["layout"]["kept_max_abs_diff"] < 1e-4
    assert all(r["kept_max_abs_diff"] < 1e-4 for r in data["inpaint"]["results"].values())
    assert math.isfinite(data["outpaint"]["circular_wrap_ratio"])


@pytest.mark.heavy
def test_image_inputs_bench_smoke(tmp_path: Path) -> None:
    run("bench/image_inputs.py", tmp_path)
    data = json.loads((tmp_path / "image_inputs_bench.json").read_text())
    kept = data["structure_kept"]
    assert {(r["model"], r["start"]) for r in kept} == {
        (model, start)
        for model in ("toy:ell=4", "tiny random SD")
        for start in ("reference", "fresh noise", "noise inversion")
    }
    for r in kept:
        assert math.isfinite(r["psnr_db"]["mean"]) and -1 <= r["ssim"]["mean"] <= 1
    # On the exact model inversion and denoising are one deterministic path up and down: a margin of ~10 dB here.
    toy = {r["start"]: r for r in kept if r["model"] == "toy:ell=4"}
    assert toy["noise inversion"]["psnr_db"]["mean"] > toy["fresh noise"]["psnr_db"]["mean"] + 3
    memory = data["memory"]
    assert memory and all(r["views"] >= 1 and r["unet_rows"] > 0 and r["rss_peak_mib"] > 0 for r in memory)
    doc = (tmp_path / "image_inputs.md").read_text()
    assert "`python bench/image_inputs.py --smoke`" in doc
    assert len(re.findall(r"^\| toy:ell=4 \|", doc, flags=re.M)) == 2  # the reference and one strength
    assert "<!-- upscale-memory-table:begin -->" in doc and "| stride (px) |" in doc
