"""The benchmark script runs (one step, one small size) and writes its table; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "panorama_cpu.py"), "--smoke", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "performance.json").read_text())
    assert [r["method"].split(",")[0] for r in rows] == ["multidiffusion (ours)", "diffusers", "diffusers"]
    assert all(r["max_abs_diff_vs_ours"] <= 1e-4 for r in rows)
    assert len({r["unet_rows"] for r in rows}) == 1  # same model evaluations, batched differently
    assert "| size (px) |" in (tmp_path / "performance.md").read_text()
