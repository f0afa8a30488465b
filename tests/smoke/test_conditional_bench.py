"""The conditional samplers' benchmark (bench/conditional.py) runs at tiny sizes and prints its table and picture."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.heavy
def test_conditional_benchmark_smoke(tmp_path):
    picture = tmp_path / "border.png"
    script = str(REPO_ROOT / "bench" / "conditional.py")
    proc = subprocess.run(
        [sys.executable, script, "--smoke", "--picture", str(picture), "--parts", "ddim", "inpaint", "picture"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "repaint" in proc.stdout and "tweedie" in proc.stdout and "blend" in proc.stdout
    assert picture.is_file() and picture.stat().st_size > 0
