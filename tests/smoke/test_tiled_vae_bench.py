"""The tiled VAE memory benchmark runs (one tiny canvas, fresh worker processes) and writes its table."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


@pytest.mark.heavy
def test_tiled_vae_memory_benchmark_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tiled_vae_memory.py"), "--smoke", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = (tmp_path / "tiled_vae.md").read_text()
    assert "`python bench/tiled_vae_memory.py --smoke`" in doc
    rows = [line for line in doc.splitlines() if re.match(r"\| tiny \| \d+×\d+ \|", line)]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 11 and float(cells[-1]) <= 1e-3  # tiled still equals full
