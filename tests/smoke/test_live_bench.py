"""The live painting benchmark (bench/live.py) runs a few frames and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.heavy
def test_live_benchmark_smoke():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "live.py"), "--smoke"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| toy | 128 × 64 | stream (5 in flight) |" in proc.stdout
    assert "**stream ÷ scratch**" in proc.stdout
